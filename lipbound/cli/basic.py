"""``lipbound demo`` and ``lipbound bound`` on the shipped models."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import torch

import lipbound


def _margin_spec(label: int, k: int) -> torch.Tensor:
    """Rows e_label - e_j for j != label: all positive lower bounds certify the label."""
    rows = [torch.eye(k)[label] - torch.eye(k)[j] for j in range(k) if j != label]
    return torch.stack(rows)


def demo(args: argparse.Namespace) -> dict[str, Any]:
    """Certify a few test digits with the shipped digits-mlp."""
    from lipbound.models.digits import digits_data

    model = lipbound.models.load("digits-mlp")
    _, _, X, y = digits_data()
    records = []
    for i in range(args.n):
        x, label = X[i], int(y[i])
        pred = int(model(x.unsqueeze(0)).argmax(1))
        lo, _ = lipbound.output_bounds(model, x, args.eps, spec=_margin_spec(pred, 10),
                                       data_range=(0.0, 1.0))
        lip = lipbound.local_lipschitz(model, x, args.eps, data_range=(0.0, 1.0))
        records.append({"index": i, "label": label, "prediction": pred,
                        "certified": bool((lo > 0).all()), "min_margin_lower": float(lo.min()),
                        "lipschitz_upper": lip.value, "lipschitz_lower": float(lip.lower.max())})
    return {"model": "digits-mlp", "eps": args.eps, "norm": "inf", "inputs": records}


def _print_demo(out: dict[str, Any]) -> None:
    print(f"lipbound demo: digits-mlp, l_inf ball of radius {out['eps']} (pixels in [0, 1])")
    print(f"{'idx':>3} {'label':>5} {'pred':>4} {'certified':>9} {'margin>=':>9} "
          f"{'L upper':>8} {'L lower':>8}")
    for r in out["inputs"]:
        print(f"{r['index']:>3} {r['label']:>5} {r['prediction']:>4} {str(r['certified']):>9} "
              f"{r['min_margin_lower']:>9.4f} {r['lipschitz_upper']:>8.3f} "
              f"{r['lipschitz_lower']:>8.3f}")


def bound(args: argparse.Namespace) -> dict[str, Any]:
    """Output bounds and local Lipschitz constants of a shipped model at one test input."""
    from lipbound.models.digits import digits_data

    model = lipbound.models.load(args.model)
    _, _, X, _ = digits_data()
    x = X[args.index]
    norm = math.inf if args.norm == "inf" else float(args.norm)
    lo, up = lipbound.output_bounds(model, x, args.eps, norm=norm, method=args.method,
                                    data_range=(0.0, 1.0))
    lip = lipbound.local_lipschitz(model, x, args.eps, norm=norm,
                                   method="crown" if args.method == "ibp" else args.method,
                                   data_range=(0.0, 1.0))
    return {"model": args.model, "index": args.index, "eps": args.eps, "norm": args.norm,
            "method": args.method, "lower": lo.tolist(), "upper": up.tolist(),
            "lipschitz": lip.to_dict()}


def _run_demo(args: argparse.Namespace) -> int:
    out = demo(args)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print_demo(out)
    return 0


def _run_bound(args: argparse.Namespace) -> int:
    print(json.dumps(bound(args), indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="certify a few digits with a shipped model")
    d.add_argument("--n", type=int, default=5)
    d.add_argument("--eps", type=float, default=0.02)
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=_run_demo)
    b = sub.add_parser("bound", help="output and Lipschitz bounds of a shipped digits model")
    b.add_argument("--model", default="digits-mlp")
    b.add_argument("--index", type=int, default=0)
    b.add_argument("--eps", type=float, default=0.02)
    b.add_argument("--norm", default="inf", choices=["inf", "2", "1"])
    b.add_argument("--method", default="crown", choices=["ibp", "crown", "alpha-crown"])
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_run_bound)
