"""Does verify's MILP stage pay, and up to how many unstable neurons (``MAX_UNSTABLE``)?

A development family of robustness properties, disjoint from the VNN-COMP instances: seed i
-> a random ReLU MLP (inputs 16-100, 2-3 hidden layers of width 32-128, 10 outputs, He
initialisation), a point x uniform in [0, 1]^n, its predicted label l, and the property "some
other class reaches l's score" (one disjunct per class j != l: y_j >= y_l) on the l_inf ball of
radius eps around x clipped to [0, 1], eps log-uniform in ``--eps`` (default [0.002, 0.1]).
Each property runs through ``lipbound.verify`` with the time limit ``--timeout`` for every
variant of
``--caps`` (0: no MILP stage; otherwise ``milp.MAX_UNSTABLE``), the variants alternating
inside each problem. Verdicts are sound whatever the variant, so the count of decided
properties (and their times) is the comparison. One JSON line per problem and a summary.

    OMP_NUM_THREADS=1 taskset -c 1 python experiments/verify_milp_choice.py --seeds 0:30
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch import nn

from lipbound.io.vnnlib import Conjunction, InputRegion
from lipbound.io.vnnlib_property import VnnlibProperty
from lipbound.verify import milp as vm
from lipbound.verify import verify

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bab_family import he_mlp  # noqa: E402
from verify_family import family_args, run_family, verdict_table  # noqa: E402


def problem(seed: int, eps_range: tuple[float, float] = (0.002, 0.1)
            ) -> tuple[nn.Module, VnnlibProperty, str]:
    g = torch.Generator().manual_seed(5000 + seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    n_in, depth, width = pick([16, 32, 64, 100]), pick([2, 3]), pick([32, 64, 128])
    sizes = [n_in] + [width] * depth + [10]
    model = he_mlp(sizes, g, nn.ReLU).eval()
    x = torch.rand(n_in, generator=g, dtype=torch.float64)
    lo, hi = (math.log10(e) for e in eps_range)
    eps = float(10 ** (lo + (hi - lo) * torch.rand(1, generator=g)))
    with torch.no_grad():
        label = int(model(x[None].float()).argmax())
    conj = []
    for j in range(10):
        if j != label:
            c = torch.zeros(1, 10, dtype=torch.float64)
            c[0, label], c[0, j] = 1.0, -1.0  # y_l - y_j <= 0: class j reaches l
            conj.append(Conjunction(c, torch.zeros(1, dtype=torch.float64)))
    region = InputRegion((x - eps).clamp(0, 1), (x + eps).clamp(0, 1), tuple(conj))
    name = f"v{seed}:{'-'.join(map(str, sizes))}:eps{eps:.3g}"
    return model, VnnlibProperty((region,), n_in, 10, name), name


def run(seed: int, caps: list[int], timeout: float, eps_range: tuple[float, float]) -> dict:
    model, prop, name = problem(seed, eps_range)
    rec: dict = {"name": name}
    saved = vm.MAX_UNSTABLE
    try:
        for cap in caps:
            vm.MAX_UNSTABLE = max(cap, 0)
            methods = ("crown", "alpha-crown", "bab") + (("milp",) if cap > 0 else ())
            res = verify(model, prop, timeout, methods=methods)
            milp = [s for s in res.details["stages"] if s["stage"] == "milp"]
            rec[str(cap)] = {"verdict": res.verdict, "time": res.time,
                             "by": res.details["decided_by"],
                             "unstable": milp[0].get("unstable") if milp else None}
    finally:
        vm.MAX_UNSTABLE = saved
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--caps", type=int, nargs="+", default=[0, 100, 200, 400])
    ap.add_argument("--eps", type=float, nargs=2, default=[0.002, 0.1],
                    help="eps range (log-uniform)")
    args = family_args(ap, "verify_milp_choice", "0:30", 30.0)
    recs = run_family(args.seeds, args.out,
                      lambda seed: run(seed, args.caps, args.timeout, tuple(args.eps)))
    verdict_table(recs, [str(c) for c in args.caps], "MILP cap", "milp")


if __name__ == "__main__":
    main()
