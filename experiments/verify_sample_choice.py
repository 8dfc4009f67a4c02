"""Does verify's last stage, uniform sampling of low-dimensional boxes, pay?

A development family of ACAS Xu-like safety properties, disjoint from the VNN-COMP instances:
seed i -> a random ReLU MLP (inputs 2-16, 2, 4 or 6 hidden layers of width 16-50, 5 outputs, He
initialisation), a box (centre uniform in [-1, 1]^n, half-width log-uniform in [0.05, 1]) and
the property "output k is never minimal", whose counterexamples satisfy y_k - y_j <= d for
every j != k. The threshold d is set just below the smallest value of max_j (y_k - y_j) that
4,096 uniform calibration points and a PGD run (64 restarts, 100 steps) reach, by a fraction
of its spread (log-uniform in [1e-3, 0.1]): what an attack of verify's strength finds is not a
counterexample, so the properties sit beyond the attacks' frontier: some hold, some fail only
where the attacks do not look. Each runs through ``lipbound.verify`` with the
time limit ``--timeout``, sampling on and off alternating inside each problem. Verdicts are
sound either way, so the count of decided properties (and their times) is the comparison.

    OMP_NUM_THREADS=1 taskset -c 1 python experiments/verify_sample_choice.py --seeds 0:30
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch import nn

from lipbound.attack import pgd_minimize
from lipbound.io.vnnlib import Conjunction, InputRegion
from lipbound.io.vnnlib_property import VnnlibProperty
from lipbound.verify import verify

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bab_family import he_mlp  # noqa: E402
from verify_family import family_args, run_family, verdict_table  # noqa: E402

K = 5


def problem(seed: int) -> tuple[nn.Module, VnnlibProperty, str]:
    g = torch.Generator().manual_seed(7000 + seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    def log_uniform(a: float, b: float) -> float:
        return float(10 ** (math.log10(a) + math.log10(b / a) * torch.rand(1, generator=g)))

    n_in, depth, width = pick([2, 3, 4, 5, 6, 8, 12, 16]), pick([2, 4, 6]), pick([16, 32, 50])
    sizes = [n_in] + [width] * depth + [K]
    model = he_mlp(sizes, g, nn.ReLU).eval()
    centre = 2 * torch.rand(n_in, generator=g, dtype=torch.float64) - 1
    half = log_uniform(0.05, 1.0)
    lo, up = centre - half, centre + half
    k = int(torch.randint(K, (1,), generator=g))
    C = torch.zeros(K - 1, K, dtype=torch.float64)
    for r, j in enumerate(j for j in range(K) if j != k):
        C[r, k], C[r, j] = 1.0, -1.0

    def worst(z: torch.Tensor) -> torch.Tensor:
        return (model(z.float()).double() @ C.T).amax(1)

    with torch.no_grad():
        v = worst(lo + (up - lo) * torch.rand(4096, n_in, generator=g, dtype=torch.float64))
    _, v_pgd = pgd_minimize(worst, lo, up, steps=100, restarts=64, generator=g)
    low = min(float(v.min()), v_pgd)
    d = low - log_uniform(1e-3, 0.1) * (float(v.median()) - low)
    region = InputRegion(lo, up, (Conjunction(C, torch.full((K - 1,), d, dtype=torch.float64)),))
    name = f"s{seed}:{'-'.join(map(str, sizes))}:half{half:.3g}"
    return model, VnnlibProperty((region,), n_in, K, name), name


def run(seed: int, timeout: float) -> dict:
    model, prop, name = problem(seed)
    rec: dict = {"name": name}
    for on in (True, False) if seed % 2 == 0 else (False, True):
        res = verify(model, prop, timeout, sampling=on)
        rec["on" if on else "off"] = {"verdict": res.verdict, "time": res.time,
                                      "by": res.details["decided_by"]}
    return rec


def main() -> None:
    args = family_args(argparse.ArgumentParser(description=__doc__), "verify_sample_choice",
                       "0:30", 30.0)
    recs = run_family(args.seeds, args.out, lambda seed: run(seed, args.timeout))
    verdict_table(recs, ["off", "on"], "sampling", "sample")


if __name__ == "__main__":
    main()
