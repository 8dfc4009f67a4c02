"""Shrinkage and threshold activations: softshrink, hardshrink and torch's Threshold.

- softshrink(x; t) (x - t above t, x + t below -t, 0 between) is continuous piecewise-linear:
  one library ``pwl`` node (kinks at +-t, optimisable relaxation, step derivative).
- Threshold(x; th, v) = x if x > th else v with v == th is max(x, th): a shifted ReLU.
- hardshrink(x; t) (x where |x| > t, else 0) and Threshold with v != th **jump**. Their ops
  (:class:`Discontinuous`, kinds ``hardshrink`` and ``threshold``) reuse the ``pwl`` interval
  and relaxation rules, which take both one-sided values at a breakpoint (so output bounds
  hold whatever value the jump takes), and evaluate as torch does. A discontinuous function
  has no Lipschitz constant and no Clarke Jacobian: these ops state no Jacobian rule and no
  naive factor, and every Lipschitz or Jacobian computation through them raises
  :class:`~lipbound.errors.UnsupportedOperationError` naming the op, its place and why
  (:attr:`Discontinuous.no_jacobian_reason`). In a forward pass an input error e moves the
  output by at most max |slope| e plus the jumps within e of the input's interval
  (:meth:`Discontinuous.float_error`); the pieces (x or a constant) are computed exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import Precision
from lipbound.ops.base import Params
from lipbound.ops.piecewise import PiecewiseLinear, _pieces, pwl_params
from lipbound.ops.registry import register
from lipbound.ops.relu_like import _clamp_min
from lipbound.ops.tracing import converts, unsupported


def hardshrink_params(t: float) -> dict[str, Any]:
    return pwl_params((-t, t), (1.0, 0.0, 1.0), (0.0, 0.0, 0.0), "hardshrink")


def threshold_params(th: float, value: float) -> dict[str, Any]:
    return pwl_params((th,), (0.0, 1.0), (value, 0.0), "threshold")


class Discontinuous(PiecewiseLinear):
    """A piecewise-linear function with jumps, evaluated by ``torch_fn(x, params)``."""

    differentiable = False
    error_uses_intervals = True

    def __init__(self, kind: str, torch_fn: Callable[[Tensor, Params], Tensor]) -> None:
        self.kind = kind
        self.torch_fn = torch_fn

    no_jacobian_reason = ("It is discontinuous: it has no Lipschitz constant and no Clarke "
                          "Jacobian (output bounds are supported).")

    def apply(self, params: Params, x: Tensor) -> Tensor:
        return self.torch_fn(x, params)

    def derivative(self, params: Params) -> None:
        return None

    def jacobian_rule(self, params: Params, index: int) -> None:
        return None

    def naive_factor(self, params: Params, p: float) -> None:
        return None

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision, ivals: Sequence[Interval] | None = None) -> Tensor:
        """max |slope| e plus the size of every jump within e of the input interval (of
        every jump without the interval); the pieces are exact (x or a constant)."""
        b, s, c = _pieces(params)
        e = errs[0]
        out = max(abs(v) for v in s) * e
        for i, v in enumerate(b):
            jump = abs((s[i + 1] - s[i]) * v + c[i + 1] - c[i])
            if ivals is None:
                out = out + jump
            else:
                near = (ivals[0].lower - e <= v) & (v <= ivals[0].upper + e)
                out = out + near.to(e.dtype) * jump
        return out


register(Discontinuous("hardshrink", lambda x, p: F.hardshrink(x, -p["breakpoints"][0])))
register(Discontinuous("threshold", lambda x, p: F.threshold(x, p["breakpoints"][0],
                                                             p["intercepts"][0])))


# -- ATen converters (lipbound.ops.tracing)

def _lambd(fx: Any, lambd: Any, name: str) -> float:
    t = float(lambd)
    if not t >= 0:
        raise unsupported(fx, f"{name} needs lambd >= 0, got {t}")
    return t


@converts("aten.softshrink.default")
def _softshrink(b, fx, x, lambd=0.5):
    t = _lambd(fx, lambd, "softshrink")
    if t == 0.0:
        return b.alias(fx, x)
    b.add(fx, "pwl", [x], pwl_params((-t, t), (1.0, 0.0, 1.0), (t, 0.0, -t), "softshrink"))


@converts("aten.hardshrink.default")
def _hardshrink(b, fx, x, lambd=0.5):
    t = _lambd(fx, lambd, "hardshrink")
    if t == 0.0:
        return b.alias(fx, x)
    b.add(fx, "hardshrink", [x], hardshrink_params(t))


@converts("aten.threshold.default")
def _threshold(b, fx, x, threshold, value):
    th, v = float(threshold), float(value)
    if th == v:  # continuous: max(x, th)
        return _clamp_min(b, fx, x, th)
    b.add(fx, "threshold", [x], threshold_params(th, v))
