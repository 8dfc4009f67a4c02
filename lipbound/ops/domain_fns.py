"""Elementwise functions with a domain: exp, log and powers ``c x^p`` (sqrt, rsqrt,
reciprocal, ``pow`` with a constant exponent).

**exp, log, c x^p** are convex or concave on every interval of their domain that avoids 0
(x^p with odd p >= 3 changes curvature at 0): the chord bounds one side and a tangent at an
optimisable point l + t (u - l) the other (mixed curvature: tangents on both sides); the
intercepts come from the same sound candidate-point machinery (float64, widened by a margin).
Intervals that leave the domain (log at x <= 0, x^-1 at 0, x^0.5 below 0) give infinite bounds,
so the bound computation refuses the input set instead of reporting a finite number. Their
rounding facts depend on where x lies (``interval_facts``): the propagated error uses
sup |f'| over the input interval widened by the input error, and Hoelder continuity
``|x^p - y^p| <= |x - y|^p`` for 0 < p < 1 (sqrt at 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import Precision
from lipbound.ops.base import NonlinearOp, Params, Relaxation, _signed_bias_where
from lipbound.ops.registry import register
from lipbound.ops.smooth import (
    _UNDERFLOW,
    EVAL_ULPS,
    SmoothFn,
    intercepts,
)
from lipbound.ops.tracing import Var, converts, unary, unsupported

_INF = math.inf


class DomainFunction(NonlinearOp):
    """A scalar function on (part of) the real line whose curvature has one sign on each
    side of 0, relaxed by the chord on its concave/convex side and optimisable tangents."""

    exact_interval = True
    interval_facts = True
    opt_lr = 0.1
    differentiable = True  # every subclass states its :meth:`derivative`

    def fn(self, params: Params) -> SmoothFn:
        raise NotImplementedError

    def valid(self, params: Params, l: Tensor, u: Tensor) -> Tensor:
        """Elements whose interval [l, u] lies inside the domain."""
        return torch.ones_like(l, dtype=torch.bool)

    def curvature(self, params: Params, l: Tensor, u: Tensor) -> Tensor:
        """+1 where f is convex on [l, u], -1 concave, 0 mixed (valid intervals)."""
        raise NotImplementedError

    def extra_ulps(self, params: Params) -> float:
        return 0.0

    def apply(self, params: Params, x: Tensor) -> Tensor:
        return self.fn(params).f(x)

    # -- helpers
    def _safe(self, params: Params, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        ok = self.valid(params, l, u)
        one = torch.ones_like(l)
        return ok, torch.where(ok, l, one), torch.where(ok, u, 2 * one)

    def _slope_at(self, params: Params, t: Tensor, l: Tensor, u: Tensor) -> Tensor:
        """f' at l + t (u - l) (0 where that is not finite, e.g. sqrt' at 0)."""
        k = self.fn(params).df(l + t * (u - l))
        return torch.where(torch.isfinite(k) & (u > l), k, torch.zeros_like(k))

    def _chord(self, params: Params, l: Tensor, u: Tensor) -> Tensor:
        f = self.fn(params).f
        w = u - l
        k = (f(u) - f(l)) / torch.where(w > 0, w, torch.ones_like(w))
        return torch.where((w > 0) & torch.isfinite(k), k, torch.zeros_like(k))

    def sup_abs_df(self, params: Params, a: Tensor, b: Tensor) -> Tensor:
        """sup |f'| over [a, b] (|f'| is monotone on each side of 0)."""
        df = self.fn(params).df
        pts = [a, b, torch.clamp(torch.zeros_like(a), a, b)]
        return torch.stack([df(p).abs() for p in pts]).max(0).values

    # -- bounds
    def ibp(self, params: Params, iv: Interval) -> Interval:
        ok, l, u = self._safe(params, iv.lower, iv.upper)
        lo, hi = intercepts(self.fn(params), torch.zeros_like(l), l, u)
        return Interval(torch.where(ok, lo, -_INF), torch.where(ok, hi, _INF))

    def _default_t(self, params: Params, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Tangent points: the middle for the tangent side of a convex/concave interval
        (the line closest to f there); for mixed curvature the best of 0, 1/4, ..., 1."""
        curv = self.curvature(params, l, u)
        half = torch.full_like(l, 0.5)
        if not bool((curv == 0).any()):
            return half, half
        fn = self.fn(params)
        m = (l + u) / 2
        best_lo = best_up = None
        t_lo, t_up = half, half
        for tv in (0.0, 0.25, 0.5, 0.75, 1.0):
            t = torch.full_like(l, tv)
            k = self._slope_at(params, t, l, u)
            lo, hi = intercepts(fn, k, l, u)
            v_lo, v_up = k * m + lo, k * m + hi
            if best_lo is None:
                best_lo, best_up, t_lo, t_up = v_lo, v_up, t, t
                continue
            t_lo = torch.where(v_lo > best_lo, t, t_lo)
            best_lo = torch.maximum(best_lo, v_lo)
            t_up = torch.where(v_up < best_up, t, t_up)
            best_up = torch.minimum(best_up, v_up)
        mixed = curv == 0
        return torch.where(mixed, t_lo, half), torch.where(mixed, t_up, half)

    def relax(self, params: Params, iv: Interval, opt: Mapping[str, Tensor] | None = None
              ) -> Relaxation:
        ok, l, u = self._safe(params, iv.lower, iv.upper)
        if opt is None:
            t_lo, t_up = self._default_t(params, l, u)
        else:
            t_lo, t_up = opt["t_lower"], opt["t_upper"]
        curv = self.curvature(params, l, u)
        chord = self._chord(params, l, u)
        k_lo = torch.where(curv < 0, chord, self._slope_at(params, t_lo, l, u))
        k_up = torch.where(curv > 0, chord, self._slope_at(params, t_up, l, u))
        fn = self.fn(params)
        b_lo, _ = intercepts(fn, k_lo, l, u)
        _, b_up = intercepts(fn, k_up, l, u)
        zero = torch.zeros_like(k_lo)
        return Relaxation((torch.where(ok, k_lo, zero),), torch.where(ok, b_lo, -_INF),
                          (torch.where(ok, k_up, zero),), torch.where(ok, b_up, _INF))

    def crown_backward(self, params: Params, A: Tensor, rel: Relaxation):
        """As the base rule, but elements with a zero coefficient add nothing even where the
        relaxation is infinite (outside the domain)."""
        pos = A > 0
        lw, uw = rel.lower_slopes[0], rel.upper_slopes[0]
        zero = A == 0
        ub = torch.where(zero, 0.0, rel.upper_bias)
        lb = torch.where(zero, 0.0, rel.lower_bias)
        return (A * torch.where(pos, uw, lw),), _signed_bias_where(A, pos, ub, lb)

    def init_opt(self, params: Params, iv: Interval) -> dict[str, Tensor]:
        _, l, u = self._safe(params, iv.lower, iv.upper)
        t_lo, t_up = self._default_t(params, l, u)
        return {"t_lower": t_lo, "t_upper": t_up}

    def project_opt(self, params: Params, opt: dict[str, Tensor]) -> None:
        for v in opt.values():
            v.data.clamp_(0.0, 1.0)

    # -- rounding facts (need intervals: f' is unbounded near 0 for log and negative powers)
    def _interval(self, mags: Sequence[Tensor], ivals: Sequence[Interval] | None) -> Interval:
        m = mags[0]
        if ivals is None:
            return Interval(-m, m)
        iv = ivals[0]
        return Interval(torch.maximum(iv.lower, -m), torch.minimum(iv.upper, m))

    def magnitude(self, params: Params, *mags: Tensor,
                  ivals: Sequence[Interval] | None = None) -> Tensor:
        """max |y| and sup |f'| |x| over the input interval (infinite outside the domain)."""
        iv = self._interval(mags, ivals)
        ok = self.valid(params, iv.lower, iv.upper)
        _, l, u = self._safe(params, iv.lower, iv.upper)
        m = self.ibp(params, Interval(l, u)).abs_max()
        m = torch.maximum(m, self.sup_abs_df(params, l, u) * mags[0])
        return torch.where(ok, m, _INF)

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision, ivals: Sequence[Interval] | None = None) -> Tensor:
        """sup |f'| e over the interval widened by the input error e (the computed input lies
        there), plus a few ulps of |f| for the library function (and the underflow floor)."""
        e = errs[0]
        iv = self._interval(mags, ivals)
        a, b = iv.lower - e, iv.upper + e
        ok = self.valid(params, a, b)
        _, a, b = self._safe(params, a, b)
        prop = self.sup_abs_df(params, a, b) * e
        prop = torch.where(e > 0, prop, torch.zeros_like(prop))
        prop = self._hoelder(params, prop, e)
        fmax = self.ibp(params, Interval(a, b)).abs_max()
        ev = (EVAL_ULPS + self.extra_ulps(params)) * prec.u * fmax + _UNDERFLOW
        return torch.where(ok, prop + ev, _INF)

    def _hoelder(self, params: Params, prop: Tensor, e: Tensor) -> Tensor:
        return prop


def _exp_fn() -> SmoothFn:
    return SmoothFn("exp", torch.exp, torch.exp, (), _INF)


_EXP = _exp_fn()


_LOG = SmoothFn("log", torch.log, torch.reciprocal, (), _INF)


class Exp(DomainFunction):
    """e^x: convex; its derivative is its own output."""

    kind = "exp"

    def fn(self, params: Params) -> SmoothFn:
        return _EXP

    def curvature(self, params: Params, l: Tensor, u: Tensor) -> Tensor:
        return torch.ones_like(l)

    def derivative(self, params: Params) -> str:
        return self.DERIVATIVE_IS_OUTPUT


class Log(DomainFunction):
    """Natural logarithm on x > 0: concave; derivative x^-1."""

    kind = "log"

    def fn(self, params: Params) -> SmoothFn:
        return _LOG

    def valid(self, params: Params, l: Tensor, u: Tensor) -> Tensor:
        return l > 0

    def curvature(self, params: Params, l: Tensor, u: Tensor) -> Tensor:
        return -torch.ones_like(l)

    def derivative(self, params: Params) -> tuple[str, dict[str, Any]]:
        return "pow", {"exponent": -1.0, "coeff": 1.0}


def _is_int(p: float) -> bool:
    return float(p).is_integer()


class Power(DomainFunction):
    """y = coeff * x^exponent (sqrt: 0.5, rsqrt: -0.5, reciprocal: -1, pow(x, p)).

    Domain: all x for integer p >= 0; x != 0 for integer p < 0; x >= 0 for other p > 0;
    x > 0 for other p < 0. Derivative: (coeff p) x^(p - 1).
    """

    kind = "pow"

    @staticmethod
    def _pc(params: Params) -> tuple[float, float]:
        return float(params["exponent"]), float(params.get("coeff", 1.0))

    def fn(self, params: Params) -> SmoothFn:
        p, c = self._pc(params)
        if p == 0.0:
            return SmoothFn("pow", lambda x: torch.full_like(x, c), torch.zeros_like, (), 0.0)
        if p == 1.0:
            return SmoothFn("pow", lambda x: c * x, lambda x: torch.full_like(x, c), (), abs(c))
        return SmoothFn("pow", lambda x: c * torch.pow(x, p),
                        lambda x: (c * p) * torch.pow(x, p - 1), (0.0,), _INF)

    def valid(self, params: Params, l: Tensor, u: Tensor) -> Tensor:
        p, _ = self._pc(params)
        if _is_int(p):
            return torch.ones_like(l, dtype=torch.bool) if p >= 0 else (l > 0) | (u < 0)
        return l >= 0 if p > 0 else l > 0

    def curvature(self, params: Params, l: Tensor, u: Tensor) -> Tensor:
        p, c = self._pc(params)
        base = math.copysign(1.0, c * p * (p - 1)) if c * p * (p - 1) != 0 else 1.0
        if not _is_int(p) or p in (0.0, 1.0):
            return torch.full_like(l, base)
        neg = base if int(p) % 2 == 0 else -base  # x^(p-2) on x < 0 has sign (-1)^p
        return torch.where(l >= 0, base, torch.where(u <= 0, neg, 0.0 if int(p) % 2 else base))

    def extra_ulps(self, params: Params) -> float:
        """pow with an integer exponent may multiply |p| times."""
        return abs(self._pc(params)[0])

    def _hoelder(self, params: Params, prop: Tensor, e: Tensor) -> Tensor:
        p, c = self._pc(params)
        if 0.0 < p < 1.0:  # |x^p - y^p| <= |x - y|^p for x, y >= 0
            return torch.minimum(prop, abs(c) * e.clamp_min(0) ** p)
        return prop

    def derivative(self, params: Params) -> tuple[str, dict[str, Any]]:
        p, c = self._pc(params)
        return "pow", {"exponent": p - 1.0, "coeff": c * p}


for _op in (Exp(), Log(), Power()):
    register(_op)


# -- ATen converters (lipbound.ops.tracing)

def _power(p: float) -> Callable:
    def handler(b, fx, x):
        b.add(fx, "pow", [x], {"exponent": p, "coeff": 1.0})

    return handler


@converts("aten.pow.Tensor_Scalar")
def _pow(b, fx, x, exponent):
    if isinstance(exponent, (Tensor, Var)) or not isinstance(x, Var):
        raise unsupported(fx, "pow is supported with an input-dependent base and a constant "
                              "number as exponent")
    p = float(exponent)
    if p == 1.0:
        return b.alias(fx, x)
    if p == 2.0:
        return b.add(fx, "square", [x])
    b.add(fx, "pow", [x], {"exponent": p, "coeff": 1.0})


converts("aten.exp.default")(unary("exp"))
converts("aten.log.default")(unary("log"))
converts("aten.sqrt.default")(_power(0.5))
converts("aten.rsqrt.default")(_power(-0.5))
converts("aten.reciprocal.default")(_power(-1.0))
