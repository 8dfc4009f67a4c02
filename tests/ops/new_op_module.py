"""Two ops lipbound does not have, written as a new op file in ``lipbound/ops/`` would be.

Importing this module registers them exactly as an op module does at import (nothing else in
the library is edited): ``atan`` (with its derivative ``d_atan``) on the library's any-slope
mechanism for smooth functions, and ``softshrink`` written from scratch on
:class:`~lipbound.ops.base.NonlinearOp`, with its Clarke derivative a library ``pwl`` step.
Each registers the ATen call it converts. ``tests/ops/test_new_op_one_file.py`` imports it
inside a fixture (and restores the registries afterwards) and checks that tracing, output
bounds, the Jacobian rule and local Lipschitz bounds all work with it.
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

# -- atan: f' = 1 / (1 + x^2) is monotone on each side of 0; f'' = -2x / (1 + x^2)^2 is
# monotone between its extrema at +-1/sqrt(3), where sup |f''| = 3 sqrt(3) / 8


def _datan(x: Tensor) -> Tensor:
    return 1.0 / (1.0 + x * x)


def _d2atan(x: Tensor) -> Tensor:
    return -2.0 * x / (1.0 + x * x) ** 2


_INFL = 1.0 / math.sqrt(3.0)
ATAN = SmoothFn("atan", torch.atan, _datan, (0.0,), 1.0, slopes=(0.0, 1.0))
D_ATAN = SmoothFn("d_atan", _datan, _d2atan, (-_INFL, _INFL), 3.0 * math.sqrt(3.0) / 8.0 + 1e-9)

register(SmoothActivation(ATAN, derivative_fn=D_ATAN))
register(SmoothActivation(D_ATAN))
converts("aten.atan.default")(unary("atan"))


# -- softshrink: x - t above t, x + t below -t, 0 between (params ``lambd`` t >= 0)


class Softshrink(NonlinearOp):
    """y = x - t for x > t, x + t for x < -t, else 0: monotone, 1-Lipschitz, kinks at +-t."""

    kind = "softshrink"
    elementwise = True
    exact_interval = True
    differentiable = True

    def _t(self, params: Params) -> float:
        return float(params["lambd"])

    def apply(self, params: Params, x: Tensor) -> Tensor:
        return torch.nn.functional.softshrink(x, self._t(params))

    def kinks(self, params: Params) -> tuple[float, ...]:
        t = self._t(params)
        return (-t, t)

    def lipschitz(self, params: Params) -> float:
        return 1.0

    def slope_range(self, params: Params) -> tuple[float, float]:
        return 0.0, 1.0

    def eval_error(self, params: Params, m_in: Tensor, m_out: Tensor, prec: Precision
                   ) -> Tensor:
        """One rounded subtraction x -+ t: at most u |y|."""
        return prec.u * m_out

    def ibp(self, params: Params, iv: Interval) -> Interval:
        """Monotone: the values at the ends."""
        return Interval(self.apply(params, iv.lower), self.apply(params, iv.upper))

    def relax(self, params: Params, iv: Interval, opt: Mapping[str, Tensor] | None = None
              ) -> Relaxation:
        """Lines with the chord's slope k; their intercepts are the extrema of f - k x over
        [l, u], which a piecewise-linear f attains at l, u or a kink inside."""
        l, u = iv.lower, iv.upper
        wide = u - l > 0
        k = torch.where(wide, (self.apply(params, u) - self.apply(params, l))
                        / torch.where(wide, u - l, torch.ones_like(u)), torch.zeros_like(u))
        pts = [l, u] + [torch.clamp(torch.full_like(l, v), l, u) for v in self.kinks(params)]
        h = torch.stack([self.apply(params, p) - k * p for p in pts])
        lo, hi = h.min(0).values, h.max(0).values
        slack = 1e-12 * (1.0 + h.abs().max(0).values)  # the rounding of k x and f - k x
        return Relaxation((k,), lo - slack, (k,), hi + slack)

    def derivative(self, params: Params) -> tuple[str, dict[str, Any]]:
        """The step 1, 0, 1 (the segment [0, 1] at each kink): a library ``pwl`` node."""
        t = self._t(params)
        return "pwl", pwl_params((-t, t), (0.0, 0.0, 0.0), (1.0, 0.0, 1.0), "d_softshrink")


register(Softshrink())


@converts("aten.softshrink.default")
def _softshrink(b: Any, fx: Any, x: Any, lambd: float = 0.5) -> None:
    if float(lambd) < 0:
        raise unsupported(fx, f"softshrink needs lambd >= 0, got {lambd}")
    b.add(fx, "softshrink", [x], {"lambd": float(lambd)})
