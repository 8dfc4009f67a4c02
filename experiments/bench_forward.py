"""Output bounds (CROWN and alpha-CROWN) on the shared random models and a 784-256-256-10 MLP.

Median wall time of 5 calls (after one warm-up call that traces the model), mean bound width,
and a sampled soundness check. Writes JSON (default experiments/out/bench_forward.json).

    python experiments/bench_forward.py [--out FILE] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import _npz_model, median_time  # noqa: E402

import lipbound  # noqa: E402
from lipbound.bounds.domains import make_domain  # noqa: E402


def models() -> list[tuple[str, nn.Module, torch.Tensor, float]]:
    out = []
    for name, eps in [("mlp16", 0.05), ("cnn8", 0.05), ("mlp784", 0.005)]:
        model, x0 = _npz_model(f"{name}.npz")
        out.append((f"random/{name}", model, x0, eps))
    torch.manual_seed(0)
    big = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                        nn.Linear(256, 10)).eval()
    out.append(("mlp 784-256-256-10 (seed 0)", big, torch.rand(1, 784), 0.01))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "bench_forward.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, model, x0, eps in models():
        row = {"model": name, "eps": eps}
        dom = make_domain(x0.double(), eps, "inf")
        with torch.no_grad():
            y = model.double()(dom.sample(2000, torch.Generator().manual_seed(0))[:, 0])
        model.float()
        for method in ["ibp", "crown", "alpha-crown"]:
            lipbound.output_bounds(model, x0, eps, method=method)  # warm-up (tracing)
            med, _, (lo, up) = median_time(
                lambda m=method, mod=model, x=x0, e=eps: lipbound.output_bounds(mod, x, e,
                                                                                method=m))
            row[method] = {"time_median": med, "mean_width": float((up - lo).mean()),
                           "sound_on_samples": bool(((y >= lo) & (y <= up)).all())}
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
