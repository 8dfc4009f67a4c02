"""Speed of ``local_lipschitz`` and ``output_bounds`` (method "crown") on convolutional nets.

Issue 19's cases: CIFAR "cnn_4layer" (random weights, eps 2e-3 and 8e-3), a 28x28 conv +
max-pool + avg-pool net (random weights), the VNN-COMP 2021 verivital max-pool net, oval21
cifar_base_kw and (``--resnet``) cifar10_resnet resnet_2b. Each call is timed single-threaded
(median of ``--repeats``, after a first call that is reported separately: it includes the
trace); upper bounds are printed with 6 significant digits. ``--json`` saves the results,
``--against`` prints ratios to an earlier JSON (e.g. of the code before a change).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python experiments/bench_cnn_speed.py --json after.json \\
        --against before.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import VNN, _onnx  # noqa: E402

import lipbound  # noqa: E402


def cnn_4layer() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(2048, 100), nn.ReLU(),
                         nn.Linear(100, 10)).eval()


def pool_net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


def _vnn(onnx: str, vnnlib: str):
    """The model and the property's box as a ball (as ``bench_vnncomp.py --part lipschitz``)."""
    from bench_vnncomp import ball_of

    from lipbound.io import read_vnnlib

    model = _onnx(VNN / onnx)
    region = read_vnnlib(VNN / vnnlib).regions[0]
    x0, eps, dr, _ = ball_of(region.lower, region.upper)
    shape = model.input_shape
    if not isinstance(dr[0], float):
        dr = (dr[0].reshape(1, *shape), dr[1].reshape(1, *shape))
    return model, x0.reshape(1, *shape), float(eps), dr


def cases(resnet: bool) -> list[tuple[str, nn.Module, torch.Tensor, float, tuple]]:
    gen = torch.Generator().manual_seed(0)
    x_c = torch.rand(1, 3, 32, 32, generator=gen)
    x_p = torch.rand(1, 1, 28, 28, generator=gen)
    cnn = cnn_4layer()
    unit = (0.0, 1.0)
    out = [("cnn_4layer eps 2e-3", cnn, x_c, 2e-3, unit),
           ("cnn_4layer eps 8e-3", cnn, x_c, 8e-3, unit),
           ("conv+maxpool+avgpool 28x28", pool_net(), x_p, 0.01, unit)]
    out.append(("verivital maxpool prop_0",
                *_vnn("verivital/Convnet_maxpool.onnx",
                      "verivital/specs/avgpool_prop_0_0.02.vnnlib")))
    out.append(("oval21 cifar_base_kw img1598",
                *_vnn("oval21/nets/cifar_base_kw.onnx",
                      "oval21/vnnlib/cifar_base_kw-img1598-eps0.0026143790849673205.vnnlib")))
    if resnet:
        out.append(("resnet_2b prop_0",
                    *_vnn("cifar10_resnet/onnx/resnet_2b.onnx",
                          "cifar10_resnet/vnnlib/prop_0_eps_0.008.vnnlib")))
    return out


def timed(fn, repeats: int) -> dict:
    t = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return {"first": first, "median": statistics.median(times), "times": times, "out": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resnet", action="store_true", help="also resnet_2b (slow)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default=None, help="run only cases whose name contains this")
    ap.add_argument("--what", choices=("both", "lipschitz", "outputs"), default="both")
    ap.add_argument("--json", type=Path, default=None, help="save results here")
    ap.add_argument("--against", type=Path, default=None, help="earlier results to compare")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    old = json.loads(args.against.read_text()) if args.against else {}
    res = {}
    for name, model, x0, eps, dr in cases(args.resnet):
        if args.only and args.only not in name:
            continue
        calls = []
        if args.what in ("both", "lipschitz"):
            calls.append(("lipschitz", lambda m=model, x=x0, e=eps, d=dr: lipbound.local_lipschitz(
                m, x, e, method="crown", data_range=d).upper))
        if args.what in ("both", "outputs"):
            calls.append(("outputs", lambda m=model, x=x0, e=eps, d=dr: lipbound.output_bounds(
                m, x, e, method="crown", data_range=d).upper))
        for kind, fn in calls:
            r = timed(fn, args.repeats)
            key = f"{name} | {kind}"
            up = r["out"]
            res[key] = {"value": float(up.max()), "upper": up.tolist(), "time": r["median"],
                        "first": r["first"], "times": r["times"]}
            line = (f"{key:48s} value {float(up.max()):.6g}  time {r['median']:7.2f} s "
                    f"(first {r['first']:.2f} s)")
            if key in old:
                o = old[key]
                rel = max((a - b) / max(abs(b), 1e-300) for a, b in zip(up.tolist(), o["upper"]))
                line += (f"  | before {o['value']:.6g} {o['time']:.2f} s, ratio "
                         f"{o['time'] / r['median']:.2f}x, max rel. change {rel:+.1e}")
            print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
