"""Anytime branch-and-bound curves for local Lipschitz constants (input splitting).

Cases of issue 4: random/mlp16 at eps 0.05 and 0.10 (exact 0.7108 / 0.7475), ACAS Xu 1_1 at
the centre of prop_3's box (eps 0.02, CROWN alone 182x above the sampled 302.0) and mnistfc
256x2 at the prop_0 image (eps 0.01). For each: CROWN, then bab for the time limit; the
trace (time, upper, lower, domains), final status and upper / lower ratio. JSON out.

    python experiments/bench_bab.py [--timeout T] [--cases mlp16 acasxu mnistfc] [--threads 1]
                                    [--split auto|input|relu|mixed] [--no-stage]
                                    [--set MODULE.NAME=VALUE ...]

``--split`` picks the brancher (default "auto", the API's rule); ``--no-stage`` runs the
search for the whole budget without the MILP stage (diagnostic: what the stage costs);
``--set`` overrides module constants (diagnostic: e.g. lipbound.bab.search.DEEPEN_LEVELS=0).
``ratio_at`` gives upper / attained at 20, 60 and 120 s read off the trace.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import lipschitz_cases  # noqa: E402

import lipbound  # noqa: E402

SELECT = {"mlp16": ("random/mlp16", None), "acasxu": ("acasxu", 0.02),
          "mnistfc": ("mnistfc", 0.01)}
#: the issue's time budget per case (seconds); --timeout overrides all of them
BUDGET = {"mlp16": 60.0, "acasxu": 60.0, "mnistfc": 120.0}


#: trace read-outs (seconds) of the upper / attained ratio
CHECKPOINTS = (20.0, 60.0, 120.0)


def ratio_at(trace: list, low0: float, t: float) -> float | None:
    """Upper / attained at time ``t`` of ``trace`` [(time, upper, lower, domains)], the
    attained side at least ``low0`` (method crown's sampled value); None past the trace."""
    done = [p for p in trace if p[0] <= t]
    if not done or trace[-1][0] < t * 0.98:
        return None
    return done[-1][1] / max(done[-1][2], low0)


def run_case(case, timeout: float, split: str = "auto") -> dict:
    t = time.perf_counter()
    crown = lipbound.local_lipschitz(case.model, case.x0, case.eps, data_range=case.data_range,
                                     n_samples=4000)
    t_crown = time.perf_counter() - t
    r = lipbound.local_lipschitz(case.model, case.x0, case.eps, method="bab", timeout=timeout,
                                 data_range=case.data_range, n_samples=4000, progress=False,
                                 split=split)
    low = max(float(r.lower.max()), float(crown.lower.max()))
    row = {"case": case.name, "eps": case.eps, "anchor": case.anchor,
           "crown_upper": crown.value, "crown_time": t_crown, "bab_upper": r.value,
           "bab_lower": low, "bab_status": r.status, "bab_time": r.time,
           "domains": r.details["domains_bounded"], "ratio_upper_lower": r.value / low,
           "crown_ratio": crown.value / low, "split": r.details.get("split"),
           "milp_stage": r.details.get("milp_stage"),
           "ratio_at": {str(int(t)): ratio_at(r.details["trace"], float(crown.lower.max()), t)
                        for t in CHECKPOINTS if t <= timeout},
           "trace": r.details["trace"]}
    exact = case.anchor.get("exact")
    if exact:
        row["over_exact"] = r.value / exact - 1
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per case (default: 60, and 120 for mnistfc)")
    ap.add_argument("--cases", nargs="+", default=list(SELECT))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--split", default="auto", choices=("auto", "input", "relu", "mixed"))
    ap.add_argument("--no-stage", action="store_true",
                    help="no MILP stage: the search gets the whole budget")
    ap.add_argument("--set", nargs="*", default=[], metavar="MODULE.NAME=VALUE",
                    help="diagnostic: set a module constant (a Python literal) before running")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "bench_bab.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for item in args.set:
        name, value = item.split("=", 1)
        mod, attr = name.rsplit(".", 1)
        setattr(importlib.import_module(mod), attr, ast.literal_eval(value))
    if args.no_stage:
        lipbound.api.milp_applies = lambda graph, p: False
    rows = []
    for case in lipschitz_cases():
        for key in args.cases:
            name, eps = SELECT[key]
            if name in case.name and (eps is None or case.eps == eps):
                row = run_case(case, args.timeout or BUDGET[key], args.split)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"timeout": args.timeout, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
