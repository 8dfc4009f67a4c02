"""Two ops lipbound does not have, written as a new op file in ``lipbound/ops/`` would be.

Importing this module registers them exactly as an op module does at import (nothing else in
the library is edited): ``asinh`` (with its derivative ``d_asinh``) on the library's any-slope
mechanism for smooth functions, and ``rrelu`` (torch's RReLU in eval mode) written from
scratch on :class:`~lipbound.ops.base.NonlinearOp`, with its Clarke derivative a library
``pwl`` step. Each registers the ATen call it converts. ``tests/ops/test_new_op_one_file.py``
imports it inside a fixture (and restores the registries afterwards) and checks that
tracing, output bounds, the Jacobian rule and local Lipschitz bounds all work with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import Precision
from lipbound.ops.base import NonlinearOp, Params, Relaxation
from lipbound.ops.piecewise import pwl_params
from lipbound.ops.registry import register
from lipbound.ops.smooth import SmoothActivation, SmoothFn
from lipbound.ops.tracing import converts, unary, unsupported

# -- asinh: f' = 1 / sqrt(1 + x^2) is monotone on each side of 0; f'' = -x / (1 + x^2)^1.5
# is monotone between its extrema at +-1/sqrt(2) (the zeros of f'''), where
# sup |f''| = 2 / 3^1.5


def _dasinh(x: Tensor) -> Tensor:
    return 1.0 / torch.sqrt(1.0 + x * x)


def _d2asinh(x: Tensor) -> Tensor:
    return -x / (1.0 + x * x) ** 1.5


_INFL = 1.0 / math.sqrt(2.0)
ASINH = SmoothFn("asinh", torch.asinh, _dasinh, (0.0,), 1.0, slopes=(0.0, 1.0))
D_ASINH = SmoothFn("d_asinh", _dasinh, _d2asinh, (-_INFL, _INFL), 2.0 / 3.0 ** 1.5 + 1e-9)

register(SmoothActivation(ASINH, derivative_fn=D_ASINH))
register(SmoothActivation(D_ASINH))
converts("aten.asinh.default")(unary("asinh"))


# -- rrelu in eval mode: max(x, k x) with k the middle of the random slopes' range (params
# ``slope`` k in [0, 1]), written from scratch (a library would lower it to leaky_relu)


class RReLU(NonlinearOp):
    """y = x for x >= 0, k x below: monotone, 1-Lipschitz, kink at 0."""

    kind = "rrelu"
    elementwise = True
    exact_interval = True
    differentiable = True

    def _k(self, params: Params) -> float:
        return float(params["slope"])

    def apply(self, params: Params, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, self._k(params) * x)

    def kinks(self, params: Params) -> tuple[float, ...]:
        return (0.0,)

    def lipschitz(self, params: Params) -> float:
        return 1.0

    def slope_range(self, params: Params) -> tuple[float, float]:
        return self._k(params), 1.0

    def eval_error(self, params: Params, m_in: Tensor, m_out: Tensor, prec: Precision
                   ) -> Tensor:
        """One rounded product k x: at most u |y|."""
        return prec.u * m_out

    def ibp(self, params: Params, iv: Interval) -> Interval:
        """Monotone: the values at the ends."""
        return Interval(self.apply(params, iv.lower), self.apply(params, iv.upper))

    def relax(self, params: Params, iv: Interval, opt: Mapping[str, Tensor] | None = None
              ) -> Relaxation:
        """Lines with the chord's slope k; their intercepts are the extrema of f - k x over
        [l, u], which a piecewise-linear f attains at l, u or the kink inside."""
        l, u = iv.lower, iv.upper
        wide = u - l > 0
        k = torch.where(wide, (self.apply(params, u) - self.apply(params, l))
                        / torch.where(wide, u - l, torch.ones_like(u)), torch.ones_like(u))
        pts = [l, u, torch.clamp(torch.zeros_like(l), l, u)]
        h = torch.stack([self.apply(params, p) - k * p for p in pts])
        lo, hi = h.min(0).values, h.max(0).values
        slack = 1e-12 * (1.0 + h.abs().max(0).values)  # the rounding of k x and f - k x
        return Relaxation((k,), lo - slack, (k,), hi + slack)

    def derivative(self, params: Params) -> tuple[str, dict[str, Any]]:
        """The step k, 1 (the segment [k, 1] at 0): a library ``pwl`` node."""
        return "pwl", pwl_params((0.0,), (0.0, 0.0), (self._k(params), 1.0), "d_rrelu")


register(RReLU())


@converts("aten.rrelu.default")
def _rrelu(b: Any, fx: Any, x: Any, lower: float = 1 / 8, upper: float = 1 / 3,
           training: bool = False, generator: Any = None) -> None:
    if training or not 0 <= lower <= upper <= 1:
        raise unsupported(fx, "rrelu needs eval mode and 0 <= lower <= upper <= 1")
    b.add(fx, "rrelu", [x], {"slope": (float(lower) + float(upper)) / 2})
