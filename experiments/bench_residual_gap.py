"""lipbound CROWN against auto_LiRPA CROWN on conv + BatchNorm residual blocks (issue 17).

The family is ``tests/user_models.residual_family`` (12 seeded blocks: strided conv, BatchNorm,
1x1 strided shortcut, ReLU, adaptive average pooling to a size that divides the feature map,
head) plus the user model ``conv_bn_residual`` (pooled to an uneven 2x3, which auto_LiRPA 0.7.1
refuses). Per model, alternating the tools: mean output-bound width at eps of

- ``lirpa``: auto_LiRPA ``compute_bounds(method="CROWN")`` on the float32 model, as users run
  it (no allowance for floating-point rounding), and ``lirpa64`` on a float64 copy;
- ``core``: lipbound's CROWN before its rounding allowance (same propagation, float64);
- ``sound``: ``lipbound.output_bounds(method="crown")``: ``core`` widened to contain the
  model's float32 forward pass and lipbound's own rounding (:mod:`lipbound.bounds.rounding`);
- ``sound64``: the same for a float64 copy of the model (its forward pass rounds 2^-53);

the ratios to ``lirpa`` and their medians, and the median time of 3 calls of each tool.

    python experiments/bench_residual_gap.py [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import median_time  # noqa: E402

import lipbound  # noqa: E402
from lipbound.bounds.domains import make_domain  # noqa: E402
from lipbound.inputs import get_traced  # noqa: E402
from lipbound.propagate.driver import bound_graph_spec, prepare_state  # noqa: E402
from tests.user_models import residual_family, user_models  # noqa: E402


def core_width(model, x: torch.Tensor, eps: float) -> float:
    """Mean width of lipbound's CROWN output bounds before the rounding allowance."""
    x1 = x.unsqueeze(0).double()
    traced = get_traced(model, x1, torch.float64, x.device)
    state = prepare_state(traced.graph, make_domain(x1, eps, "inf"), "crown")
    K = traced.graph[traced.graph.output].shape[0]
    C = torch.eye(K, dtype=torch.float64).unsqueeze(0)
    lo, up = bound_graph_spec(state, traced.graph.output, C, "crown")
    return float((up - lo).mean())


def lirpa_width(model, x: torch.Tensor, eps: float) -> float | None:
    """Mean width of auto_LiRPA's CROWN bounds, or None where it cannot bound the model."""
    try:
        from auto_LiRPA import BoundedModule, BoundedTensor
        from auto_LiRPA.perturbations import PerturbationLpNorm
    except ImportError:
        return None
    xb = x.unsqueeze(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bm = BoundedModule(model, torch.zeros_like(xb), verbose=0)
            ptb = PerturbationLpNorm(norm=math.inf, eps=eps)
            lo, up = bm.compute_bounds(x=(BoundedTensor(xb, ptb),), method="CROWN")
    except (NotImplementedError, RuntimeError):
        return None
    return float((up - lo).detach().double().mean())


def sound_width(model, x: torch.Tensor, eps: float) -> float:
    r = lipbound.output_bounds(model, x, eps, method="crown")
    return float((r.upper - r.lower).mean())


def cases():
    m, x = user_models()["conv_bn_residual"]
    return [*residual_family(), ("conv_bn_residual (user model)", m, x, 0.01)]


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "experiments" / "out" / "bench_residual_gap.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, model, x, eps in cases():
        m64, x64 = copy.deepcopy(model).double(), x.double()
        t_lirpa, _, lirpa = median_time(lambda m=model, x=x, e=eps: lirpa_width(m, x, e), 3)
        t_lip, _, sound = median_time(lambda m=model, x=x, e=eps: sound_width(m, x, e), 3)
        row = {"model": name, "eps": eps, "lirpa": lirpa, "lirpa64": lirpa_width(m64, x64, eps),
               "core": core_width(model, x, eps), "sound": sound,
               "sound64": sound_width(m64, x64, eps), "time_lirpa": t_lirpa,
               "time_lipbound": t_lip}
        for k in ("core", "sound", "sound64"):
            row[f"{k}/lirpa"] = ratio(row[k], lirpa)
        row["core/lirpa64"] = ratio(row["core"], row["lirpa64"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    for k in ("core/lirpa", "core/lirpa64", "sound/lirpa", "sound64/lirpa"):
        vals = [r[k] for r in rows if r[k] is not None]
        summary[f"median {k}"] = statistics.median(vals)
        summary[f"max {k}"] = max(vals)
    summary["allowance share of the sound width (median)"] = statistics.median(
        [(r["sound"] - r["core"]) / r["sound"] for r in rows])
    print(json.dumps(summary), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
