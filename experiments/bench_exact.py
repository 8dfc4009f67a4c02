"""Benchmark of lipbound's exact baselines (JSON output).

- ``milp``: the exact MILP (``lipbound.exact.exact_local_lipschitz``, LipMIP-style, HiGHS) for the
  l_inf local Lipschitz constant (gradient l1 norm) of random 10-64-64-1 (eps 0.1) and 10-32-32-1
  (eps 0.5) ReLU nets, with big-M constants from CROWN (``big_m="crown"``) and from interval
  arithmetic (``big_m="interval"``) side by side: time, value, status, binaries, neurons fixed as
  stable, MIP nodes;
- ``mlp16``: exact values of the shared random/mlp16 model at eps 0.05 and 0.10 (all 10 rows;
  expected 0.7108 and 0.7475);
- ``lipsdp``: LipSDP-Neuron (SCS, certified in float64) versus the naive product of spectral norms
  on a random 10-50-50-10 net.

Nets: ``tests/oracles.py``'s ``random_sequential(sizes, seed)`` (torch.manual_seed(seed), then
nn.Linear's default init); centres x0 = numpy default_rng(seed).standard_normal(n_in).  Times are
the median of ``--repeats`` runs (a run longer than ``--repeat-below`` seconds is not repeated).

    python experiments/bench_exact.py [--timeout 300] [--repeats 3] [--only milp mlp16 lipsdp]
        [--out experiments/out/bench_exact.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lipbound.exact.api import exact_local_lipschitz
from lipbound.exact.lipsdp import lipsdp_neuron

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/
from tests.oracles import random_mlp, random_sequential  # noqa: E402

MILP_CASES = [
    {"name": "mlp-10-64-64-1", "sizes": [10, 64, 64, 1], "seed": 0, "eps": 0.1},
    {"name": "mlp-10-32-32-1", "sizes": [10, 32, 32, 1], "seed": 1, "eps": 0.5},
]
SDP_CASES = [{"name": "mlp-10-50-50-10", "sizes": [10, 50, 50, 10], "seed": 2}]
MLP16 = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "random" / "mlp16.npz"
MLP16_EXPECTED = {0.05: 0.7108, 0.10: 0.7475}


def _timed(fn, repeats: int, repeat_below: float):
    """(last result, wall times, process CPU times): repeats runs, or one if the first is slow.
    CPU time (all threads of this process) is the steadier figure on a shared, loaded machine."""
    times, cpu, res = [], [], None
    for i in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        res = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if i == 0 and times[0] > repeat_below:
            break
    return res, (times, cpu)


def _exact_record(r, timing) -> dict:
    times, cpu = timing
    rows = r.details["rows"]
    return {
        "status": r.status,
        "value": r.value,
        "lower": float(r.lower.max()),
        "time_s": statistics.median(times),
        "times_s": times,
        "cpu_s": statistics.median(cpu),
        "cpu_times_s": cpu,
        "bounds_time_s": r.details["bounds_time"],
        "n_binaries": max(row["n_binaries"] for row in rows),
        "n_unstable": max(row["n_unstable"] for row in rows),
        "stable_per_layer": rows[0]["stable_per_layer"],
        "n_stable": sum(rows[0]["stable_per_layer"]),
        "mip_nodes": sum(row["mip_nodes"] for row in rows),
    }


def milp_case(case: dict, big_m: str, timeout: float, repeats: int, repeat_below: float) -> dict:
    net = random_sequential(case["sizes"], case["seed"])
    x0 = torch.from_numpy(np.random.default_rng(case["seed"]).standard_normal(case["sizes"][0]))
    r, times = _timed(lambda: exact_local_lipschitz(net, x0, case["eps"], math.inf, big_m=big_m,
                                                    timeout=timeout), repeats, repeat_below)
    return {"case": case["name"], "eps": case["eps"], "norm": "inf", "big_m": big_m,
            "timeout_s": timeout, **_exact_record(r, times)}


def _load_mlp16() -> tuple[nn.Module, torch.Tensor]:
    d = np.load(MLP16)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                        nn.Linear(32, 10))
    state = {k: torch.from_numpy(d[k]) for k in d.files if not k.startswith("__")}
    net.load_state_dict(state)
    return net.eval(), torch.from_numpy(d["__x0"]).reshape(-1)


def mlp16_case(eps: float, timeout: float, repeats: int, repeat_below: float) -> dict:
    net, x0 = _load_mlp16()
    r, times = _timed(lambda: exact_local_lipschitz(net, x0, eps, math.inf, timeout=timeout),
                      repeats, repeat_below)
    return {"case": "random/mlp16", "eps": eps, "norm": "inf", "big_m": "crown",
            "expected": MLP16_EXPECTED[eps], "per_row_upper": r.upper.tolist(),
            "timeout_s": timeout, **_exact_record(r, times)}


def sdp_case(case: dict, repeats: int) -> dict:
    mlp = random_mlp(case["sizes"], case["seed"])
    r, (times, cpu) = _timed(lambda: lipsdp_neuron(mlp), repeats, 60.0)
    # a sampled lower bound on the global l2 constant: largest Jacobian spectral norm seen
    net = mlp.to_sequential()
    g = torch.Generator().manual_seed(0)
    X = 3 * torch.randn(2000, case["sizes"][0], generator=g, dtype=torch.float64)
    with torch.no_grad():
        J = torch.func.vmap(torch.func.jacrev(net))(X)
    sampled = float(torch.linalg.matrix_norm(J, ord=2).max())
    t0 = time.perf_counter()
    naive = float(np.prod([np.linalg.norm(w, 2) for w in mlp.weights]))
    naive_time = time.perf_counter() - t0
    return {
        "case": case["name"],
        "status": r.status,
        "certified": r.certified,
        "sdp_value": r.sdp_value,
        "naive": r.naive,
        "naive_recomputed": naive,
        "naive_time_s": naive_time,
        "ratio_certified_to_naive": r.certified / r.naive,
        "sampled_lower_2000": sampled,
        "time_s": statistics.median(times),
        "times_s": times,
        "cpu_s": statistics.median(cpu),
        "sdp_time_s": r.details["sdp_time"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=float, default=300.0, help="MILP time limit per run (s)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repeat-below", type=float, default=60.0,
                    help="repeat a run only if its first time is below this (s)")
    ap.add_argument("--big-m", nargs="+", default=["crown", "interval"],
                    choices=["crown", "interval"])
    ap.add_argument("--only", nargs="+", default=["milp", "mlp16", "lipsdp"],
                    choices=["milp", "mlp16", "lipsdp"])
    ap.add_argument("--cases", nargs="+", default=None,
                    help="subset of MILP case names / mlp16 eps values (e.g. mlp-10-64-64-1 0.1)")
    ap.add_argument("--out", default=os.path.join("experiments", "out", "bench_exact.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    want = (lambda name: True) if args.cases is None else (lambda name: name in args.cases)
    report: dict = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": os.cpu_count(), "torch": torch.__version__,
                    "load_avg_at_start": os.getloadavg()},
    }
    if "milp" in args.only:
        report["milp"] = [milp_case(c, b, args.timeout, args.repeats, args.repeat_below)
                          for c in MILP_CASES for b in args.big_m if want(c["name"])]
    if "mlp16" in args.only:
        report["mlp16"] = [mlp16_case(e, args.timeout, args.repeats, args.repeat_below)
                           for e in MLP16_EXPECTED if want(str(e))]
    if "lipsdp" in args.only:
        report["lipsdp"] = [sdp_case(c, args.repeats) for c in SDP_CASES]
    report["machine"]["load_avg_at_end"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
