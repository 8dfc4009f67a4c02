"""sin and cos (and -sin, the derivative of cos): periodic, so f' has infinitely many
monotone pieces and the breakpoint list of :mod:`lipbound.ops.smooth` does not apply.

f(x) = sin(x + q pi / 2) for q quarter turns (sin: 0, cos: 1, -sin: 2); f' is the function
of q + 1. For a slope k the tightest lines around f on [l, u] are ``k x + min h`` and
``k x + max h`` with h = f - k x, whose extrema lie at l, u or where f'(x) = k, i.e.
x = +-acos(k) - q pi / 2 + 2 pi m (none when |k| > 1). For intervals of width <= 4 pi every
such x in [l, u] is among the 2 (M + 1) candidates of the M + 1 consecutive m from below l
(points are clamped into [l, u]: extra candidates are values of h on [l, u], never wrong).
Wider intervals use f in [-1, 1]: h in [min(-k l, -k u) - 1, max(-k l, -k u) + 1], sound for
any width (the IBP range is then [-1, 1]). So every slope is sound and slopes are optimised
as for the other smooth activations. The candidates are computed in float64; a point off an
extremum by rounding d changes h by at most d^2 / 2 (h' = 0 there, |h''| <= 1), far inside the
intercepts' margin.

Evaluation error: 8 ulps of (|x| + 1), the smooth mechanism's EVAL_ULPS rule; torch's sin
and cos are accurate to a few ulps of the result after an argument reduction whose error
grows with |x|, which the ulps of |x| cover (for huge |x| that term exceeds 2, the whole range).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import Precision
from lipbound.ops.base import NonlinearOp, Params, Relaxation
from lipbound.ops.registry import register
from lipbound.ops.smooth import _MARGIN, _UNDERFLOW, EVAL_ULPS, default_slopes
from lipbound.ops.tracing import converts, unary

#: widest interval handled by enumerating the points where f' = k (wider: f in [-1, 1])
WIDTH_MAX = 4 * math.pi
_M = int(math.ceil(WIDTH_MAX / (2 * math.pi))) + 2
_NAMES = ("sin", "cos", "d_cos")


def _quarter(q: int, x: Tensor) -> Tensor:
    q %= 4
    v = torch.sin(x) if q % 2 == 0 else torch.cos(x)
    return v if q < 2 else -v


@dataclass(frozen=True)
class Sinusoid:
    """x -> sin(x + q pi / 2): ``f`` and ``df`` (the shape default_slopes reads)."""

    q: int

    def f(self, x: Tensor) -> Tensor:
        return _quarter(self.q, x)

    def df(self, x: Tensor) -> Tensor:
        return _quarter(self.q + 1, x)


def sinusoid_intercepts(fn: Sinusoid, k: Tensor, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """(b_low, b_up) with k x + b_low <= f(x) <= k x + b_up on [l, u] (see the module)."""
    dtype = k.dtype
    k64, l64, u64 = torch.broadcast_tensors(k.double(), l.double(), u.double())
    with torch.no_grad():
        theta = torch.acos(k64.detach().clamp(-1.0, 1.0))
        shift = fn.q * math.pi / 2
        m0 = torch.floor((l64 + shift) / (2 * math.pi)) - 1
        pts = [l64, u64]
        for j in range(_M + 1):
            base = 2 * math.pi * (m0 + j) - shift
            for sgn in (1.0, -1.0):
                pts.append(torch.minimum(torch.maximum(base + sgn * theta, l64), u64))
        pts = torch.stack(pts)
    h = fn.f(pts) - k64.unsqueeze(0) * pts
    lo, hi = h.min(0).values, h.max(0).values
    wide = (u64 - l64) > WIDTH_MAX
    kl, ku = k64 * l64, k64 * u64
    lo = torch.where(wide, torch.minimum(-kl, -ku) - 1.0, lo)
    hi = torch.where(wide, torch.maximum(-kl, -ku) + 1.0, hi)
    scale = 1.0 + torch.maximum(lo.abs(), hi.abs()).detach()
    return (lo - _MARGIN * scale).to(dtype), (hi + _MARGIN * scale).to(dtype)


class SinusoidOp(NonlinearOp):
    """sin(x + q pi / 2): exact intervals (up to the margin), any-slope relaxations."""

    exact_interval = True
    elementwise = True
    opt_lr = 0.05

    def __init__(self, q: int) -> None:
        self.fn = Sinusoid(q)
        self.kind = _NAMES[q]
        self.differentiable = q < 2  # -sin is only the derivative of cos

    def derivative(self, params: Params) -> tuple[str, dict[str, Any]] | None:
        return (_NAMES[self.fn.q + 1], {}) if self.differentiable else None

    def apply(self, params: Params, x: Tensor) -> Tensor:
        return self.fn.f(x)

    def lipschitz(self, params: Params) -> float:
        return 1.0

    def slope_range(self, params: Params) -> tuple[float, float]:
        return -1.0, 1.0

    def eval_error(self, params: Params, m_in: Tensor, m_out: Tensor, prec: Precision
                   ) -> Tensor:
        return EVAL_ULPS * prec.u * (m_in + 1.0) + _UNDERFLOW

    def ibp(self, params: Params, iv: Interval) -> Interval:
        lo, hi = sinusoid_intercepts(self.fn, torch.zeros_like(iv.lower), iv.lower, iv.upper)
        return Interval(lo.clamp(min=-1.0), hi.clamp(max=1.0))

    def relax(self, params: Params, iv: Interval, opt: Mapping[str, Tensor] | None = None
              ) -> Relaxation:
        if opt is None:
            k_lo, k_up = self._default(iv)
        else:
            k_lo, k_up = opt["k_lower"], opt["k_upper"]
        b_lo, _ = sinusoid_intercepts(self.fn, k_lo, iv.lower, iv.upper)
        _, b_up = sinusoid_intercepts(self.fn, k_up, iv.lower, iv.upper)
        return Relaxation((k_lo,), b_lo, (k_up,), b_up)

    def _default(self, iv: Interval) -> tuple[Tensor, Tensor]:
        return default_slopes(self.fn, iv.lower, iv.upper, sinusoid_intercepts)

    def init_opt(self, params: Params, iv: Interval) -> dict[str, Tensor]:
        k_lo, k_up = self._default(iv)
        return {"k_lower": k_lo, "k_upper": k_up}


for _q in range(3):
    register(SinusoidOp(_q))

converts("aten.sin.default")(unary("sin"))
converts("aten.cos.default")(unary("cos"))
