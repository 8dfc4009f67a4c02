"""Elementwise piecewise operators: piecewise-linear functions (hardtanh, relu6, clamp,
hardsigmoid and the Clarke step functions of their derivatives) and hardswish.

**Piecewise-linear** (``pwl``; params ``breakpoints`` b_1 < ... < b_n, ``slopes`` and
``intercepts`` of the n + 1 pieces): the value at a breakpoint where the pieces disagree is the
whole segment between the one-sided limits (the Clarke convention, so a step function can be
the derivative of a kink). For any slope k the tightest lines are ``k x + min h`` and
``k x + max h`` with h = f - k x, whose extrema over [l, u] lie at l, u or a breakpoint (both
one-sided values): exact in closed form, so every slope is sound and the slopes are optimised
(alpha-CROWN) between the smallest and largest useful slope. The breakpoints are the op's
:meth:`~lipbound.ops.base.NonlinearOp.kinks` (where branch and bound may split).

hardtanh / clamp(a, b) / relu6 are one ``pwl`` node (pieces a, x, b), not ``a + relu(x - a) -
relu(x - b)``: that rewrite is exact but relaxes the two ReLUs separately, and no choice of its
ReLU slopes gives the line through (l, a) and (b, b) that bounds clamp from above when both
kinks lie inside [l, u]; the direct relaxation has every tight line. A clamp with one limit is
a shifted ReLU (``scale_shift`` -> ``relu`` -> ``scale_shift``), which is exact and as tight.

**Hardswish** is piecewise C^1 (f' jumps at -3 and 3) with f' monotone on each piece: the
sound any-slope mechanism of :mod:`lipbound.ops.smooth` applies; its derivative is a ``pwl``
with jumps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import Precision, gamma
from lipbound.ops.base import NonlinearOp, Params, Relaxation
from lipbound.ops.registry import register
from lipbound.ops.relu_like import _clamp_max, _clamp_min
from lipbound.ops.smooth import SmoothActivation, SmoothFn
from lipbound.ops.tracing import Var, converts, unary, unsupported

_INF = math.inf


def _pieces(params: Params) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    b = tuple(float(v) for v in params["breakpoints"])
    s = tuple(float(v) for v in params["slopes"])
    c = tuple(float(v) for v in params["intercepts"])
    if len(s) != len(b) + 1 or len(c) != len(s) or list(b) != sorted(b):
        raise ValueError(f"bad piecewise-linear params {dict(params)!r}")
    return b, s, c


def pwl_params(breakpoints: Sequence[float], slopes: Sequence[float],
               intercepts_: Sequence[float], name: str = "pwl") -> dict[str, Any]:
    """Params of a ``pwl`` node (``name`` says which function it is, for messages)."""
    return {"breakpoints": tuple(float(v) for v in breakpoints),
            "slopes": tuple(float(v) for v in slopes),
            "intercepts": tuple(float(v) for v in intercepts_), "name": name}


def hardtanh_params(lo: float, hi: float) -> dict[str, Any]:
    """clamp(x, lo, hi), lo < hi: pieces lo, x, hi."""
    return pwl_params((lo, hi), (0.0, 1.0, 0.0), (lo, 0.0, hi), "hardtanh")


def hardsigmoid_params() -> dict[str, Any]:
    """clamp(x / 6 + 1 / 2, 0, 1)."""
    return pwl_params((-3.0, 3.0), (0.0, 1.0 / 6.0, 0.0), (0.0, 0.5, 1.0), "hardsigmoid")


def _continuous(b, s, c) -> bool:
    return all(math.isclose(s[i] * v + c[i], s[i + 1] * v + c[i + 1], rel_tol=1e-12,
                            abs_tol=1e-12) for i, v in enumerate(b))


class PiecewiseLinear(NonlinearOp):
    """y = slopes[i] x + intercepts[i] on the i-th piece between the breakpoints."""

    kind = "pwl"
    exact_interval = True
    differentiable = True
    opt_lr = 0.2

    def kinks(self, params: Params) -> tuple[float, ...]:
        return _pieces(params)[0]

    def apply(self, params: Params, x: Tensor) -> Tensor:
        b, s, c = _pieces(params)
        y = s[0] * x + c[0]
        for i, v in enumerate(b):  # x >= b_i: piece i + 1
            y = torch.where(x >= v, s[i + 1] * x + c[i + 1], y)
        return y

    def lipschitz(self, params: Params) -> float | None:
        b, s, c = _pieces(params)
        return max(abs(v) for v in s) if _continuous(b, s, c) else None

    def slope_range(self, params: Params) -> tuple[float, float] | None:
        """A continuous piecewise-linear function's difference quotients are convex
        combinations of its slopes."""
        b, s, c = _pieces(params)
        return (min(s), max(s)) if _continuous(b, s, c) else None

    interval_aware = True

    def needs_intervals(self, params: Params) -> bool:
        """Steps (jumps) need intervals: a chord across a jump has no bounded slope."""
        return self.lipschitz(params) is None

    def magnitude(self, params: Params, m: Tensor,
                  ivals: Sequence[Interval] | None = None) -> Tensor:
        """max |y| and the largest slope the relaxation can take times |x| (the Lipschitz
        constant of a continuous function; over the input interval for a step)."""
        if ivals is None:
            if self.lipschitz(params) is None:
                return torch.full_like(m, _INF)
            return super().magnitude(params, m)
        iv = ivals[0]
        iv = Interval(torch.maximum(iv.lower, -m), torch.minimum(iv.upper, m))
        kmin, kmax = self._slope_range(params, iv.lower, iv.upper)
        return torch.maximum(self.ibp(params, iv).abs_max(),
                             torch.maximum(kmin.abs(), kmax.abs()) * m)

    def eval_error(self, params: Params, m_in: Tensor, m_out: Tensor, prec: Precision
                   ) -> Tensor | float:
        """Clamps (pieces that are constants or the identity) are exact; otherwise s x + c
        with a rounded constant s (hardsigmoid's 1/6): three roundings."""
        b, s, c = _pieces(params)
        if all(si == 0.0 or (si == 1.0 and ci == 0.0) for si, ci in zip(s, c)):
            return 0.0
        return gamma(3, prec.u) * (max(abs(v) for v in s) * m_in + max(abs(v) for v in c))

    def _h_extremes(self, params: Params, k: Tensor, l: Tensor, u: Tensor
                    ) -> tuple[Tensor, Tensor]:
        """(min, max) of f(x) - k x over [l, u], with both one-sided values at breakpoints."""
        b, s, c = _pieces(params)
        hl = self.apply(params, l) - k * l
        hu = self.apply(params, u) - k * u
        lo, hi = torch.minimum(hl, hu), torch.maximum(hl, hu)
        for i, v in enumerate(b):
            inside = (l <= v) & (v <= u)
            for j in (i, i + 1):
                h = (s[j] - k) * v + c[j]
                lo = torch.where(inside, torch.minimum(lo, h), lo)
                hi = torch.where(inside, torch.maximum(hi, h), hi)
        return lo, hi

    def ibp(self, params: Params, iv: Interval) -> Interval:
        zero = torch.zeros_like(iv.lower)
        lo, hi = self._h_extremes(params, zero, iv.lower, iv.upper)
        return Interval(lo, hi)

    def _slope_range(self, params: Params, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """[k_min, k_max]: the chord and the slopes of the pieces that meet [l, u]."""
        b, s, _ = _pieces(params)
        w = u - l
        chord = torch.where(w > 0, (self.apply(params, u) - self.apply(params, l))
                            / torch.where(w > 0, w, torch.ones_like(w)), torch.zeros_like(w))
        kmin, kmax = chord, chord
        edges = [-_INF, *b, _INF]
        for j, sj in enumerate(s):
            meets = (u >= edges[j]) & (l <= edges[j + 1])
            kmin = torch.where(meets, torch.clamp(kmin, max=sj), kmin)
            kmax = torch.where(meets, torch.clamp(kmax, min=sj), kmax)
        return kmin, kmax

    def _default_t(self, params: Params, l: Tensor, u: Tensor, kmin: Tensor, kmax: Tensor
                   ) -> tuple[Tensor, Tensor]:
        """Fractions t (k = kmin + t (kmax - kmin)) of the lines closest to f at the middle of
        [l, u] (the largest area under the lower line, the smallest under the upper) among
        the chord and the pieces' slopes."""
        b, s, _ = _pieces(params)
        m = (l + u) / 2
        rng = kmax - kmin
        cands = [torch.zeros_like(l), torch.ones_like(l)]
        w = u - l
        ch = torch.where(w > 0, (self.apply(params, u) - self.apply(params, l))
                         / torch.where(w > 0, w, torch.ones_like(w)), kmin)
        cands.append(torch.where(rng > 0, (ch - kmin) / torch.where(rng > 0, rng, 1.0), 0.0))
        for sj in s:
            t = torch.where(rng > 0, (sj - kmin) / torch.where(rng > 0, rng, 1.0), 0.0)
            cands.append(t.clamp(0.0, 1.0))
        best_lo = best_up = None
        t_lo = t_up = torch.zeros_like(l)
        for t in cands:
            k = kmin + t * rng
            lo, hi = self._h_extremes(params, k, l, u)
            v_lo, v_up = k * m + lo, k * m + hi
            if best_lo is None:
                best_lo, best_up, t_lo, t_up = v_lo, v_up, t, t
                continue
            better_lo, better_up = v_lo > best_lo, v_up < best_up
            best_lo = torch.where(better_lo, v_lo, best_lo)
            t_lo = torch.where(better_lo, t, t_lo)
            best_up = torch.where(better_up, v_up, best_up)
            t_up = torch.where(better_up, t, t_up)
        return t_lo, t_up

    def relax(self, params: Params, iv: Interval, opt: Mapping[str, Tensor] | None = None
              ) -> Relaxation:
        l, u = iv.lower, iv.upper
        kmin, kmax = self._slope_range(params, l, u)
        if opt is None:
            t_lo, t_up = self._default_t(params, l, u, kmin, kmax)
        else:
            t_lo, t_up = opt["t_lower"], opt["t_upper"]
        k_lo = kmin + t_lo * (kmax - kmin)
        k_up = kmin + t_up * (kmax - kmin)
        b_lo, _ = self._h_extremes(params, k_lo, l, u)
        _, b_up = self._h_extremes(params, k_up, l, u)
        return Relaxation((k_lo,), b_lo, (k_up,), b_up)

    def init_opt(self, params: Params, iv: Interval) -> dict[str, Tensor]:
        kmin, kmax = self._slope_range(params, iv.lower, iv.upper)
        t_lo, t_up = self._default_t(params, iv.lower, iv.upper, kmin, kmax)
        return {"t_lower": t_lo, "t_upper": t_up}

    def project_opt(self, params: Params, opt: dict[str, Tensor]) -> None:
        for v in opt.values():
            v.data.clamp_(0.0, 1.0)

    def tighten_mask(self, params: Params, index: int, iv: Interval) -> Tensor:
        mask = torch.zeros_like(iv.lower, dtype=torch.bool)
        for v in _pieces(params)[0]:
            mask |= (iv.lower <= v) & (v <= iv.upper)
        return mask

    def derivative(self, params: Params) -> tuple[str, dict[str, Any]]:
        """The step function of the slopes (the segment between them at each kink)."""
        b, s, _ = _pieces(params)
        return "pwl", pwl_params(b, (0.0,) * len(s), s,
                                 f"d_{params.get('name', 'pwl')}")


def _hardswish(x: Tensor) -> Tensor:
    return x * torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


def _dhardswish(x: Tensor) -> Tensor:
    return torch.where(x < -3.0, torch.zeros_like(x),
                       torch.where(x > 3.0, torch.ones_like(x), x / 3.0 + 0.5))


HARDSWISH = SmoothFn("hardswish", _hardswish, _dhardswish, (-3.0, 3.0), 1.5)


class Hardswish(SmoothActivation):
    """x relu6(x + 3) / 6: 0, x (x + 3) / 6, x on the three pieces; f' jumps at -3 and 3."""

    def __init__(self) -> None:
        super().__init__(HARDSWISH)
        self.opt_lr = 0.1
        self.differentiable = True  # :meth:`derivative` below

    def apply(self, params: Params, x: Tensor) -> Tensor:
        return F.hardswish(x)

    def kinks(self, params: Params) -> tuple[float, ...]:
        return (-3.0, 3.0)

    def derivative(self, params: Params) -> tuple[str, dict[str, Any]]:
        return "pwl", pwl_params((-3.0, 3.0), (0.0, 1.0 / 3.0, 0.0), (0.0, 0.5, 1.0),
                                 "d_hardswish")


for _op in (PiecewiseLinear(), Hardswish()):
    register(_op)


# -- ATen converters (lipbound.ops.tracing)

@converts("aten.clamp.default")
def _clamp(b, fx, x, min=None, max=None):
    if isinstance(min, (Tensor, Var)) or isinstance(max, (Tensor, Var)):
        raise unsupported(fx, "clamp with tensor limits is not supported (use numbers)")
    if min is not None and max is not None:
        lo, hi = float(min), float(max)
        if not lo < hi:
            raise unsupported(fx, f"clamp needs min < max, got {lo} and {hi}")
        return b.add(fx, "pwl", [x], hardtanh_params(lo, hi))
    if min is not None:
        return _clamp_min(b, fx, x, min)
    if max is not None:
        return _clamp_max(b, fx, x, max)
    return b.alias(fx, x)


@converts("aten.hardtanh.default")
def _hardtanh(b, fx, x, min_val=-1.0, max_val=1.0):
    return _clamp(b, fx, x, min_val, max_val)


@converts("aten.relu6.default")
def _relu6(b, fx, x):
    b.add(fx, "pwl", [x], hardtanh_params(0.0, 6.0))


@converts("aten.hardsigmoid.default")
def _hardsigmoid(b, fx, x):
    b.add(fx, "pwl", [x], hardsigmoid_params())


converts("aten.hardswish.default")(unary("hardswish"))
