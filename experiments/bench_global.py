"""Certified global l_2 Lipschitz bounds: naive product / ECLipsE-Fast / LipSDP / sampled.

For a seeded family of random MLPs (ReLU, nn.Linear default init, ``torch.manual_seed(seed)``)
and a few random CNNs, the l_2 -> l_2 Lipschitz bound of the logit vector by
``lipbound.global_lipschitz(model, x, 2, method=m).details["vector_l2"]`` for m in naive,
eclipse and (nets with at most ``--lipsdp-max`` hidden neurons) lipsdp, the sampled lower
bound ``max ||J(x)||_2`` over ``--samples`` Gaussian points at scales 0.1 / 1 / 3, and, when
the ``eclipse_nn`` package (pip ``eclipse-nn``, the authors' reference code; benchmark-only,
uncertified float64 numbers) is importable, its ECLipsE-Fast value side by side. The methods
run alternately per net. Output: JSON rows and a median summary (ratios to the sampled lower
bound, eclipse/naive, times).

    OMP_NUM_THREADS=1 python experiments/bench_global.py [--seeds 4] [--samples 400]
        [--lipsdp-max 200] [--out experiments/out/bench_global.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import lipbound

torch.set_num_threads(1)


def mlp(sizes, seed):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def cnn(seed, c=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(c, c, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(c * 16, 10)).eval()


def family(seeds):
    nets = []
    for s in range(seeds):
        for sizes in ([32, 64, 64, 10], [64, 128, 128, 128, 10], [32, 64, 64, 64, 64, 64, 10],
                      [20, 32, 32, 10]):
            nets.append((f"mlp{'-'.join(map(str, sizes))}/s{s}", mlp(sizes, s), (sizes[0],),
                         sum(sizes[1:-1])))
        nets.append((f"cnn8x8/s{s}", cnn(s), (1, 8, 8), 2 * 4 * 64))
    return nets


def sampled(model, shape, n, seed):
    gen = torch.Generator().manual_seed(seed)
    best = 0.0
    scales = (0.1, 1.0, 3.0)
    for i in range(n):
        x = torch.randn(*shape, generator=gen) * scales[i % 3]
        J = torch.autograd.functional.jacobian(lambda z: model(z[None])[0], x)
        best = max(best, float(torch.linalg.matrix_norm(J.reshape(J.shape[0], -1), ord=2)))
    return best


def peer(model):
    try:
        from eclipse_nn.eclipsE_fast import ECLipsE_Fast
    except ImportError:
        return None, None
    if not all(isinstance(m, (nn.Linear, nn.ReLU)) for m in model):
        return None, None
    ws = [m.weight.detach().double() for m in model if isinstance(m, nn.Linear)]
    t = time.perf_counter()
    v = float(ECLipsE_Fast(ws, [0.0] * (len(ws) - 1), [1.0] * (len(ws) - 1)))
    return v, time.perf_counter() - t


def run(args):
    rows = []
    for name, model, shape, hidden in family(args.seeds):
        x = torch.zeros(*shape)
        row = {"net": name}
        for method in ("naive", "eclipse", "lipsdp"):
            if method == "lipsdp" and (hidden > args.lipsdp_max or name.startswith("cnn")):
                continue
            t = time.perf_counter()
            g = lipbound.global_lipschitz(model, x, 2, method=method)
            row[method] = g.details["vector_l2"]
            row[f"{method}_s"] = time.perf_counter() - t
        row["eclipse_nn"], row["eclipse_nn_s"] = peer(model)
        row["sampled"] = sampled(model, shape, args.samples, 0)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def summary(rows):
    def med(key, den="sampled", sel=lambda r: True):
        v = [r[key] / r[den] for r in rows
             if sel(r) and r.get(key) is not None and r.get(den) is not None]
        return (round(statistics.median(v), 4), len(v)) if v else None

    out = {}
    for kind in ("mlp", "cnn"):
        sel = (lambda k: lambda r: r["net"].startswith(k))(kind)
        out[kind] = {
            "naive/sampled": med("naive", sel=sel), "eclipse/sampled": med("eclipse", sel=sel),
            "lipsdp/sampled": med("lipsdp", sel=sel),
            "eclipse/naive": med("eclipse", "naive", sel),
            "lipsdp/eclipse": med("lipsdp", "eclipse", sel),
            "eclipse/eclipse_nn": med("eclipse", "eclipse_nn", sel),
            "median_s": {m: round(statistics.median([r[f"{m}_s"] for r in rows if sel(r)
                                                     and r.get(f"{m}_s") is not None]), 4)
                         for m in ("naive", "eclipse", "lipsdp", "eclipse_nn")
                         if any(sel(r) and r.get(f"{m}_s") is not None for r in rows)},
        }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--lipsdp-max", type=int, default=200)
    ap.add_argument("--out", default="experiments/out/bench_global.json")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = run(args)
    summ = summary(rows)
    print(json.dumps(summ, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "summary": summ}, indent=1))


if __name__ == "__main__":
    main()
