"""How much of a ``method="bab"`` budget should the sign search get before the MILP stage?

``lipbound.bab.milp_stage.SEARCH_SHARE`` gives the search a share of the budget by brancher
("relu" and "mixed" 0.5, "input" 0.3); the rows it leaves open then go to the MILP. This runs
the development seeds (``--seeds A:B``, default 100:140, disjoint from the evaluation seeds
0-39 of bench_bab_family.py) of ``bench_bab_family.family_problem`` whose brancher is
``--brancher`` (default relu) with each share of ``--shares`` for that brancher, every budget
of ``--budgets`` and both objectives ("max", "rows"), one fresh ``local_lipschitz`` call per
combination (variants alternate problem by problem). No exact values are needed: every
variant's bounds are certified over the same set, so they are compared with each other,
against the best value attained by any run of the problem (``best``; the exact value lies in
[best, min upper]). One JSON line per problem and a summary per share: the bounds within
0.5 % of ``best`` (the family's criterion with ``best`` for exact) and the geometric mean
of upper / best.

    OMP_NUM_THREADS=1 taskset -c 1 python experiments/bab_stage_share.py --shares 0.5 1.0

``--child-steps N ...`` compares instead the alpha/beta-CROWN steps of the sign domains'
forward bounds below the root (``lipbound.bab.relu_split.CHILD_FORWARD_ITERATIONS``), at the
default share; its variants are labelled ``steps<N>``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

import lipbound
from lipbound.bab import milp_stage, relu_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bab_family import TOL, family_problem  # noqa: E402


def one(p: dict, budget: float, objective: str) -> dict:
    r = lipbound.local_lipschitz(p["model"], p["x"], p["eps"], method="bab", timeout=budget,
                                 data_range=p["data_range"], objective=objective,
                                 progress=False)
    return {"upper": r.upper.tolist(), "lower": r.lower.tolist(), "split": r.details["split"],
            "milp": r.details["milp_stage"].get("ran", False), "time": r.time}


def problem(seed: int, brancher: str, variants: list[tuple[str, str, float]],
            budgets: list[float]) -> dict | None:
    """Every (label, knob, value) variant at every budget and objective, or None when the
    seed's problem does not pick ``brancher``."""
    p = family_problem(seed)
    probe = one(p, 0.5, "max")  # which brancher split="auto" picks (before any MILP stage)
    if probe["split"] != brancher:
        return None
    runs = {}
    saved = milp_stage.SEARCH_SHARE[brancher], relu_split.CHILD_FORWARD_ITERATIONS
    try:
        for b in budgets:
            for o in ("max", "rows"):
                for label, knob, v in variants:  # alternate the variants inside one problem
                    if knob == "share":
                        milp_stage.SEARCH_SHARE[brancher] = v
                    else:
                        relu_split.CHILD_FORWARD_ITERATIONS = int(v)
                    runs[f"{label}/{b:g}/{o}"] = one(p, b, o)
                    milp_stage.SEARCH_SHARE[brancher] = saved[0]
                    relu_split.CHILD_FORWARD_ITERATIONS = saved[1]
    finally:
        milp_stage.SEARCH_SHARE[brancher], relu_split.CHILD_FORWARD_ITERATIONS = saved
    best = [max(v) for v in zip(probe["lower"], *(r["lower"] for r in runs.values()))]
    return {"name": p["name"], "best": best, "runs": runs}


def scores(rec: dict, key: str) -> tuple[int, int, float]:
    """(bounds within TOL of best, bounds, sum of log(upper / best)) of one run."""
    up, best = rec["runs"][key]["upper"], rec["best"]
    if key.endswith("/max"):
        up, best = [max(up)], [max(best)]
    ok = sum(u <= v * (1 + TOL) for u, v in zip(up, best))
    return ok, len(up), sum(math.log(u / v) for u, v in zip(up, best))


def summary(recs: list[dict], labels: list[str], budgets: list[float]) -> None:
    print(f"\n{len(recs)} problems; bounds within {TOL:.1%} of the best attained value, "
          "geometric mean upper / best")
    print("| budget | objective | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    for b in budgets:
        for o in ("max", "rows"):
            cells = []
            for label in labels:
                ok = n = 0
                logs = 0.0
                for r in recs:
                    a, c, lg = scores(r, f"{label}/{b:g}/{o}")
                    ok, n, logs = ok + a, n + c, logs + lg
                cells.append(f"{ok}/{n}, {math.exp(logs / max(n, 1)):.4f}")
            print(f"| {b:g} s | {o} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", default="100:140")
    ap.add_argument("--brancher", default="relu", choices=sorted(milp_stage.SEARCH_SHARE))
    ap.add_argument("--shares", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--child-steps", type=int, nargs="+", default=None)
    ap.add_argument("--budgets", type=float, nargs="+", default=[5.0, 20.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "bab_stage_share.jsonl"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = ([(f"steps{n}", "steps", n) for n in args.child_steps] if args.child_steps
                else [(f"{s:g}", "share", s) for s in args.shares])
    a, b = (int(v) for v in args.seeds.split(":"))
    recs = []
    for seed in range(a, b):
        rec = problem(seed, args.brancher, variants, args.budgets)
        if rec is None:
            continue
        recs.append(rec)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps({"name": rec["name"], **{k: scores(rec, k)[:2] for k in rec["runs"]}}),
              flush=True)
    summary(recs, [v[0] for v in variants], args.budgets)


if __name__ == "__main__":
    main()
