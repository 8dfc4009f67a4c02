"""ReLU and LeakyReLU: exact intervals, the triangle relaxation with an optimisable lower slope.

ReLU on [l, u] with l < 0 < u: ``alpha x <= relu(x) <= u (x - l) / (u - l)`` for any alpha in
[0, 1]. LeakyReLU(k), 0 <= k <= 1, is convex too: the chord above, ``alpha x`` (alpha in [k, 1])
below. Stable neurons (l >= 0 or u <= 0) are exact. In a floating-point forward pass, an
error of a stably negative input does not pass ReLU (:meth:`LeakyReLU.float_error`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import Precision
from lipbound.ops.base import NonlinearOp, Params, Relaxation
from lipbound.ops.facts import GATE, JacobianRule
from lipbound.ops.registry import register
from lipbound.ops.tracing import converts, unsupported


class LeakyReLU(NonlinearOp):
    """y = max(x, k x) with params ``negative_slope`` k in [0, 1]; ReLU is k = 0."""

    kind = "leaky_relu"
    exact_interval = True
    elementwise = True
    error_uses_intervals = True
    opt_lr = 0.5

    def tighten_mask(self, params: Params, index: int, iv: Interval) -> Tensor:
        return (iv.lower < 0) & (iv.upper > 0)

    def slope(self, params: Params) -> float:
        return float(params.get("negative_slope", 0.0))

    def lipschitz(self, params: Params) -> float:
        return max(1.0, abs(self.slope(params)))

    def slope_range(self, params: Params) -> tuple[float, float]:
        """Difference quotients of max(x, k x) lie between min(k, 1) and max(k, 1)."""
        k = self.slope(params)
        return min(k, 1.0), max(k, 1.0)

    def relu_like_slope(self, params: Params) -> float:
        return self.slope(params)

    def kinks(self, params: Params) -> tuple[float, ...]:
        return (0.0,)

    differentiable = True

    def jacobian_rule(self, params: Params, index: int) -> JacobianRule:
        """``leaky_switch(z, g)``: g where z > 0, k g where z < 0, either at 0."""
        return JacobianRule(GATE, "leaky_switch", params)

    def eval_error(self, params: Params, m_in: Tensor, m_out: Tensor, prec: Precision
                   ) -> Tensor | float:
        """ReLU is exact; the product k x of LeakyReLU rounds once."""
        return 0.0 if self.slope(params) == 0 else prec.u * m_out

    def error_slopes(self, params: Params, iv: Interval, e: Tensor) -> tuple[Tensor, Tensor]:
        """k where u + e <= 0 (x and x~ both on the negative piece: ReLU passes no error),
        1 where l - e >= 0, else [min(k, 1), max(k, 1)] (the chord slopes of a convex
        piecewise-linear function). fl(u + e) <= 0 exactly when u + e <= 0 (and likewise
        for l - e): rounding is monotone and a nonzero sum of two floats never rounds to 0."""
        k = self.slope(params)
        a, b = min(k, 1.0), max(k, 1.0)
        neg, pos = iv.upper + e <= 0, iv.lower - e >= 0
        neg, pos = torch.broadcast_tensors(neg, pos)
        full = [torch.full(neg.shape, v, dtype=e.dtype, device=e.device) for v in (k, 1.0, a, b)]
        lo = torch.where(neg, full[0], torch.where(pos, full[1], full[2]))
        hi = torch.where(neg, full[0], torch.where(pos, full[1], full[3]))
        return lo, hi

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision, ivals: Sequence[Interval] | None = None) -> Tensor:
        """The input error e times the largest |slope| of :meth:`error_slopes` (given the
        interval of the exact input; else the Lipschitz constant), plus :meth:`eval_error`."""
        if ivals is None:
            return super().float_error(params, errs, mags, prec)
        lo, hi = self.error_slopes(params, ivals[0], errs[0])
        gain = torch.maximum(lo.abs(), hi.abs())
        return gain * errs[0] + self.eval_error(params, mags[0], self.magnitude(params, *mags),
                                                prec)

    def apply(self, params: Params, x: Tensor) -> Tensor:
        k = self.slope(params)
        return F.relu(x) if k == 0 else F.leaky_relu(x, k)

    def ibp(self, params: Params, iv: Interval) -> Interval:
        return Interval(self.apply(params, iv.lower), self.apply(params, iv.upper))

    def _default_alpha(self, params: Params, l: Tensor, u: Tensor) -> Tensor:
        k = self.slope(params)
        return torch.where(u > -l, torch.ones_like(l), torch.full_like(l, k))

    def relax(self, params: Params, iv: Interval, opt: Mapping[str, Tensor] | None = None
              ) -> Relaxation:
        k = self.slope(params)
        l, u = iv.lower, iv.upper
        active, inactive = l >= 0, u <= 0
        unstable = ~(active | inactive)
        width = torch.where(unstable, u - l, torch.ones_like(u))
        chord = (u - k * l) / width  # slope of the chord from (l, k l) to (u, u)
        up_slope = torch.where(active, torch.ones_like(l),
                               torch.where(inactive, torch.full_like(l, k), chord))
        up_bias = torch.where(unstable, k * l - chord * l, torch.zeros_like(l))
        alpha = self._default_alpha(params, l, u) if opt is None else opt["alpha"]
        lo_slope = torch.where(active, torch.ones_like(alpha),
                               torch.where(inactive, torch.full_like(alpha, k), alpha))
        return Relaxation((lo_slope,), torch.zeros_like(l), (up_slope,), up_bias)

    def init_opt(self, params: Params, iv: Interval) -> dict[str, Tensor]:
        return {"alpha": self._default_alpha(params, iv.lower, iv.upper)}

    def project_opt(self, params: Params, opt: dict[str, Tensor]) -> None:
        opt["alpha"].data.clamp_(self.slope(params), 1.0)


class ReLU(LeakyReLU):
    """y = max(x, 0)."""

    kind = "relu"

    def slope(self, params: Params) -> float:
        return 0.0

    def jacobian_rule(self, params: Params, index: int) -> JacobianRule:
        """``relu_switch(z, g)``: g where z > 0, 0 where z < 0, either at 0."""
        return JacobianRule(GATE, "relu_switch", {})


register(ReLU())
register(LeakyReLU())


# -- ATen converters (lipbound.ops.tracing)

@converts("aten.relu.default", "aten.relu_.default")
def _relu(b, fx, x):
    b.add(fx, "relu", [x])


def _shift(c: float) -> dict:
    return {"scale": torch.tensor(1.0, dtype=torch.float64),
            "shift": torch.tensor(c, dtype=torch.float64)}


@converts("aten.clamp_min.default")
def _clamp_min(b, fx, x, min):
    """max(x, c) = c + relu(x - c): a shifted ReLU (exact, relaxed as tightly)."""
    c = float(min)
    if c == 0.0:
        return b.add(fx, "relu", [x])
    z = b.aux(fx, "shift", "scale_shift", [x], x.shape, _shift(-c))
    r = b.aux(fx, "relu", "relu", [z], x.shape)
    return b.add(fx, "scale_shift", [r], _shift(c))


@converts("aten.clamp_max.default")
def _clamp_max(b, fx, x, max):
    """min(x, c) = c - relu(c - x)."""
    c = float(max)
    flip = {"scale": torch.tensor(-1.0, dtype=torch.float64),
            "shift": torch.tensor(c, dtype=torch.float64)}
    z = b.aux(fx, "flip", "scale_shift", [x], x.shape, flip)
    r = b.aux(fx, "relu", "relu", [z], x.shape)
    return b.add(fx, "scale_shift", [r], flip)


@converts("aten.leaky_relu.default")
def _leaky_relu(b, fx, x, negative_slope=0.01):
    k = float(negative_slope)
    if k == 0.0:
        return b.add(fx, "relu", [x])
    if not 0.0 < k <= 1.0:
        raise unsupported(fx, f"leaky_relu needs a negative slope in [0, 1], got {k}")
    b.add(fx, "leaky_relu", [x], {"negative_slope": k})
