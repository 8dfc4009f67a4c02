"""Which brancher should verification's branch and bound use on low-dimensional inputs?

On the problems of ``bench_bab_family.family_problem`` with at most ``--max-inputs`` inputs
(seeds ``--seeds A:B``, default 100:170: the development seeds of bab_split_choice.py, disjoint
from the evaluation seeds 0-39 of bench_bab_family.py), each output row s gets a proof goal
"C_s f(x') > d_s on the whole set" that is true by construction: d_s lies ``--tight`` (default
5 %) of the way from the best certified lower bound ``ref`` of branch and bound (the larger of
``output_bounds(method="bab")`` with each brancher, ``--ref`` seconds each) down towards the
smallest sampled value (40,000 points), i.e. below a certified bound. Rows that method crown
already proves are dropped (problems left without rows are skipped). ``prove_outputs`` then
runs with ``split="mixed"`` and with ``split="input"``; one JSON line per problem: seconds to
decide, status and goals proven per brancher.

    OMP_NUM_THREADS=1 taskset -c 0 python experiments/verify_split_choice.py --timeout 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import lipbound

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bab_family import family_problem  # noqa: E402

SAMPLES = 40_000


def goals(p: dict, tight: float, ref_seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(thresholds d [S], rows method crown leaves open [S] bool); see the module doc."""
    x, eps, k, dr = p["x"], p["eps"], p["rows"], p["data_range"]
    eye = torch.eye(k, dtype=x.dtype)
    g = torch.Generator().manual_seed(7)
    pts = x + eps * (2 * torch.rand(SAMPLES, x.numel(), generator=g, dtype=x.dtype) - 1)
    if dr is not None:
        pts = pts.clamp(*dr)
    with torch.no_grad():
        smin = p["model"](pts).min(0).values
    ref = torch.stack([lipbound.output_bounds(p["model"], x, eps, spec=eye, method="bab",
                                              timeout=ref_seconds, data_range=dr, split=s,
                                              progress=False)[0].reshape(-1)
                       for s in ("mixed", "input")]).max(0).values
    d = ref - tight * (smin - ref).clamp_min(1e-9)
    lo, _ = lipbound.output_bounds(p["model"], x, eps, spec=eye, method="crown", data_range=dr)
    return d, lo.reshape(-1) <= d


def run(seed: int, timeout: float, tight: float, ref_seconds: float) -> dict:
    p = family_problem(seed)
    d, keep = goals(p, tight, ref_seconds)
    rec: dict = {"name": p["name"], "inputs": p["x"].numel(), "rows": int(keep.sum())}
    if not keep.any():
        return rec
    spec = torch.eye(p["rows"], dtype=torch.float64)[keep]
    for split in ("mixed", "input"):
        t = time.perf_counter()
        r = lipbound.prove_outputs(p["model"], p["x"], p["eps"], spec, d[keep],
                                   data_range=p["data_range"], timeout=timeout, split=split,
                                   progress=False)
        rec[split] = {"time": round(time.perf_counter() - t, 3), "status": r.status,
                      "proven": int(r.proven.sum())}
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="100:170")
    ap.add_argument("--max-inputs", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--tight", type=float, default=0.05)
    ap.add_argument("--ref", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    a, b = (int(v) for v in args.seeds.split(":"))
    for seed in range(a, b):
        if family_problem(seed)["x"].numel() <= args.max_inputs:
            print(json.dumps(run(seed, args.timeout, args.tight, args.ref)), flush=True)


if __name__ == "__main__":
    main()
