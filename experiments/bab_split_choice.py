"""Which brancher should ``split="auto"`` pick for Lipschitz constants of low-dimensional nets?

Runs ``local_lipschitz(method="bab", objective="max")`` with ``split="mixed"`` and with
``split="relu"`` on the problems of ``bench_bab_family.family_problem`` with at most
``--max-inputs`` inputs, for seeds ``--seeds A:B`` (default 100:170, a development family
disjoint from the 40 evaluation seeds 0-39 of bench_bab_family.py), and prints one line per
problem: seconds to finish, status and upper / attained lower per brancher. Its result set
``lipbound.api.LIPSCHITZ_MIXED_MIN_UNSTABLE`` (with the undecided kink counts of method
crown at each problem's root, printed by the same runs' ``unstable`` field).

    OMP_NUM_THREADS=1 taskset -c 1 python experiments/bab_split_choice.py --timeout 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import lipbound
from lipbound.api import _setup
from lipbound.bab.split_points import undecided_kinks
from lipbound.jacobian.bound import jacobian_state

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bab_family import family_problem  # noqa: E402


def unstable(p: dict) -> int:
    """Kink elements method crown leaves undecided at the problem's root."""
    traced, _, C, dom = _setup(p["model"], p["x"], p["eps"], float("inf"), None,
                               p["data_range"], torch.float64)
    state, _ = jacobian_state(traced.graph, C, dom, "crown", 1.0, bound_gradient=False)
    return undecided_kinks(traced.graph, state.bounds)


def run(seed: int, timeout: float) -> dict:
    p = family_problem(seed)
    rec: dict = {"name": p["name"], "inputs": p["x"].numel(), "unstable": unstable(p)}
    for split in ("mixed", "relu"):
        t = time.perf_counter()
        r = lipbound.local_lipschitz(p["model"], p["x"], p["eps"], method="bab",
                                     timeout=timeout, data_range=p["data_range"],
                                     objective="max", progress=False, split=split)
        rec[split] = {"time": time.perf_counter() - t, "status": r.status,
                      "gap": float(r.upper.max() / r.lower.max()),
                      "domains": r.details["domains_bounded"]}
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="100:170")
    ap.add_argument("--max-inputs", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    a, b = map(int, args.seeds.split(":"))
    for seed in range(a, b):
        if family_problem(seed)["x"].numel() <= args.max_inputs:
            print(json.dumps(run(seed, args.timeout)), flush=True)


if __name__ == "__main__":
    main()
