"""float32 CROWN coefficients (``precision="float32"``) against float64 on the bench_cnn_speed
cases: time (single thread, the two precisions alternated case by case, median of
``--repeats`` after a warm-up call) and the relative widening of the bounds.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python experiments/bench_float32.py [--resnet]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cnn_speed import cases  # noqa: E402

import lipbound  # noqa: E402


def _call(kind, model, x, eps, dr, precision):
    if kind == "lipschitz":
        return lipbound.local_lipschitz(model, x, eps, method="crown", data_range=dr,
                                        precision=precision).upper
    b = lipbound.output_bounds(model, x, eps, method="crown", data_range=dr,
                               precision=precision)
    return b.upper - b.lower


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resnet", action="store_true")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{'case':48s} {'t64 s':>7s} {'t32 s':>7s} {'t64/t32':>7s} {'median widen':>12s} "
          f"{'max widen':>10s}")
    for name, model, x0, eps, dr in cases(args.resnet):
        if args.only and args.only not in name:
            continue
        for kind in ("outputs", "lipschitz"):
            times = {"float64": [], "float32": []}
            out = {}
            for _ in range(args.repeats + 1):  # the first round warms up (trace)
                for prec in ("float64", "float32"):
                    t = time.perf_counter()
                    out[prec] = _call(kind, model, x0, eps, dr, prec)
                    times[prec].append(time.perf_counter() - t)
            t64, t32 = (statistics.median(times[p][1:]) for p in ("float64", "float32"))
            rel = ((out["float32"] - out["float64"]) / out["float64"].abs()).tolist()
            print(f"{name + ' | ' + kind:48s} {t64:7.2f} {t32:7.2f} {t64 / t32:7.2f} "
                  f"{statistics.median(rel):12.2e} {max(rel):10.2e}", flush=True)


if __name__ == "__main__":
    main()
