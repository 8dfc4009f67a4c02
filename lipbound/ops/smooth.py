"""Smooth activations (sigmoid, tanh, GELU, SiLU) and their derivatives, and the mechanism
that :mod:`lipbound.ops.smooth_families` (ELU(alpha), softplus(threshold)),
:mod:`lipbound.ops.special` (atan, erf, GELU-tanh, Mish) and :mod:`lipbound.ops.piecewise`
(hardswish) build on.

One sound mechanism serves them all. For a scalar function f that is piecewise C^1 on known
pieces where f' is monotone, and any slope k, the tightest lines with slope k around f on
[l, u] are

    k x + min_{[l,u]} (f(x) - k x)  <=  f(x)  <=  k x + max_{[l,u]} (f(x) - k x).

The extrema of h(x) = f(x) - k x sit at l, u, the piece breakpoints, or the roots of f'(x) = k,
of which each monotone piece of f' holds at most one (found by float64 bisection). So *every*
slope gives a sound relaxation: default slopes (chord / tangent candidates) give CROWN, and
optimising the slopes (alpha-CROWN) only ever moves between sound relaxations. The intercepts
are widened by a tiny margin that dominates float64 rounding and bisection error. Where f
itself jumps (softplus's threshold switch, ELU(alpha)'s derivative at 0) both one-sided
values join the candidates (:attr:`SmoothFn.jumps`), so the bounds hold on both sides and
at the point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import Precision
from lipbound.ops.base import NonlinearOp, Params, Relaxation
from lipbound.ops.registry import register
from lipbound.ops.tracing import converts, unary

_BISECT_STEPS = 64
_MARGIN = 1e-12


@dataclass(frozen=True)
class SmoothFn:
    """A scalar function with derivative and the breakpoints between monotone pieces of f'.

    ``lipschitz`` is sup |f'| (used by the naive Lipschitz product).
    """

    name: str
    f: Callable[[Tensor], Tensor]
    df: Callable[[Tensor], Tensor]
    breakpoints: tuple[float, ...]
    lipschitz: float
    #: absolute error of torch's evaluation beyond its ulps (softplus returns x above 20)
    eval_abs: float = 0.0
    #: (inf f', sup f') over the real line (difference quotients lie in between by the mean
    #: value theorem); None where not recorded
    slopes: tuple[float, float] | None = None
    #: points where f itself jumps, as (point, left limit, right limit): every value between
    #: them is taken as f's value there (the bounds then hold on both sides; a derivative
    #: with a jump, such as ELU's with alpha != 1, contains its Clarke set at the point)
    jumps: tuple[tuple[float, float, float], ...] = ()
    #: points where f is not differentiable (f' jumps): the op's branch-and-bound split points
    kinks: tuple[float, ...] = ()


#: ulps of max(|x|, |f(x)|) that torch's vectorised evaluation of a smooth activation may be
#: off by: a few rounded operations (1 / (1 + exp(-x)), x Phi(x), ...) of library functions
#: accurate to a few ulps each
EVAL_ULPS = 8
#: absolute floor for results that underflow to subnormals (larger than float32's 2^-149)
_UNDERFLOW = 2.0 ** -120


def _roots_of_df(fn: SmoothFn, k: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """x in [a, b] with f'(x) = k where f' is monotone on (a, b) (else a); all float64.

    f' is read one ulp inside the ends: at a breakpoint f' may jump (hardswish), and the
    value on the other side must not hide a root inside the piece."""
    inside = a < b
    ga = fn.df(torch.where(inside, torch.nextafter(a, b), a)) - k
    gb = fn.df(torch.where(inside, torch.nextafter(b, a), b)) - k
    has_root = (ga * gb <= 0) & (a < b)
    lo, hi = a.clone(), b.clone()
    sign_lo = torch.sign(ga)
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) / 2
        same = torch.sign(fn.df(mid) - k) == sign_lo
        lo = torch.where(same, mid, lo)
        hi = torch.where(same, hi, mid)
    return torch.where(has_root, (lo + hi) / 2, a)


def candidate_points(fn: SmoothFn, k: Tensor, l: Tensor, u: Tensor) -> list[Tensor]:
    """Points of [l, u] that include every extremum of f(x) - k x (float64, no grad)."""
    pts = [l, u]
    edges = [-math.inf, *fn.breakpoints, math.inf]
    for p in fn.breakpoints:
        pts.append(torch.clamp(torch.full_like(l, p), l, u))
    for left, right in zip(edges[:-1], edges[1:]):
        a = torch.clamp(l, min=left) if left > -math.inf else l
        b = torch.clamp(u, max=right) if right < math.inf else u
        a = torch.minimum(a, u)
        b = torch.maximum(torch.minimum(b, u), a)
        pts.append(_roots_of_df(fn, k, a, b))
    return pts


def intercepts(fn: SmoothFn, k: Tensor, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """(b_low, b_up) with k x + b_low <= f(x) <= k x + b_up for all x in [l, u].

    Computed in float64; differentiable in k (envelope theorem: the extremiser is held fixed).
    """
    dtype = k.dtype
    k64, l64, u64 = k.double(), l.double(), u.double()
    k64, l64, u64 = torch.broadcast_tensors(k64, l64, u64)
    with torch.no_grad():
        pts = torch.stack(candidate_points(fn, k64.detach(), l64, u64))
    h = fn.f(pts) - k64.unsqueeze(0) * pts
    lo, hi = h.min(0).values, h.max(0).values
    for p, left, right in fn.jumps:  # both one-sided limits where the jump lies in [l, u]
        inside = (l64 <= p) & (p <= u64)
        for v in (left, right):
            hv = torch.where(inside, v - k64 * p, lo)
            lo = torch.minimum(lo, hv)
            hi = torch.maximum(hi, torch.where(inside, hv, hi))
    scale = 1.0 + torch.maximum(lo.abs(), hi.abs()).detach()
    return (lo - _MARGIN * scale).to(dtype), (hi + _MARGIN * scale).to(dtype)


def fn_interval(fn: SmoothFn, l: Tensor, u: Tensor) -> Interval:
    """Exact (up to the margin) range of f on [l, u]: the slope-0 intercepts."""
    lo, hi = intercepts(fn, torch.zeros_like(l), l, u)
    return Interval(lo, hi)


def default_slopes(fn: Any, l: Tensor, u: Tensor,
                   icpt: Callable[..., tuple[Tensor, Tensor]] = intercepts
                   ) -> tuple[Tensor, Tensor]:
    """Slopes for the lower and upper line: among the chord and tangents at l, u and the
    midpoint, the ones whose line is closest to f at the midpoint (``fn`` has ``f`` and
    ``df``; ``icpt(fn, k, l, u)`` gives the sound intercepts of slopes k, any k), within
    [-sup |f'|, sup |f'|]."""
    l64, u64 = l.double(), u.double()
    m = (l64 + u64) / 2
    w = u64 - l64
    chord = torch.where(w > 1e-9, (fn.f(u64) - fn.f(l64)) / w.clamp_min(1e-9), fn.df(m))
    cands = torch.stack([chord, fn.df(l64), fn.df(u64), fn.df(m)])
    lip = getattr(fn, "lipschitz", math.inf)
    if math.isfinite(lip):  # a chord across a jump is steeper than f' anywhere: keep the
        cands = cands.clamp(-lip, lip)  # slopes within sup |f'| (what magnitude() assumes)
    lo_b, up_b = icpt(fn, cands, l64.expand_as(cands), u64.expand_as(cands))
    best_lo = (cands * m + lo_b).argmax(0, keepdim=True)
    best_up = (cands * m + up_b).argmin(0, keepdim=True)
    k_lo = cands.gather(0, best_lo).squeeze(0)
    k_up = cands.gather(0, best_up).squeeze(0)
    return k_lo.to(l.dtype), k_up.to(l.dtype)


class SmoothActivation(NonlinearOp):
    """An elementwise smooth function with slope-parametrised sound relaxations."""

    exact_interval = True
    elementwise = True

    def __init__(self, fn: SmoothFn, kind: str | None = None,
                 derivative_fn: SmoothFn | None = None) -> None:
        self.fn = fn
        self.kind = kind or fn.name
        self.opt_lr = 0.05 * fn.lipschitz
        self.derivative_fn = derivative_fn
        self.differentiable = derivative_fn is not None

    def fn_of(self, params: Params) -> SmoothFn:
        """The function of a node with these params (one fixed function here; families of
        functions such as ELU(alpha) override it)."""
        return self.fn

    def derivative(self, params: Params) -> tuple[str, dict[str, Any]] | None:
        """f' as the registered op of ``derivative_fn`` (None for the derivatives
        themselves: Jacobian graphs are not differentiated again)."""
        d = self.derivative_fn
        return None if d is None else (d.name, {})

    def apply(self, params: Params, x: Tensor) -> Tensor:
        return self.fn_of(params).f(x)

    def kinks(self, params: Params) -> tuple[float, ...]:
        return self.fn_of(params).kinks

    def lipschitz(self, params: Params) -> float:
        return self.fn_of(params).lipschitz

    def slope_range(self, params: Params) -> tuple[float, float] | None:
        fn = self.fn_of(params)
        return None if fn.jumps else fn.slopes

    def eval_error(self, params: Params, m_in: Tensor, m_out: Tensor, prec: Precision
                   ) -> Tensor:
        return EVAL_ULPS * prec.u * (m_in + m_out) + self.fn_of(params).eval_abs + _UNDERFLOW

    def ibp(self, params: Params, iv: Interval) -> Interval:
        return fn_interval(self.fn_of(params), iv.lower, iv.upper)

    def relax(self, params: Params, iv: Interval, opt: Mapping[str, Tensor] | None = None
              ) -> Relaxation:
        fn = self.fn_of(params)
        if opt is None:
            k_lo, k_up = default_slopes(fn, iv.lower, iv.upper)
        else:
            k_lo, k_up = opt["k_lower"], opt["k_upper"]
        b_lo, _ = intercepts(fn, k_lo, iv.lower, iv.upper)
        _, b_up = intercepts(fn, k_up, iv.lower, iv.upper)
        return Relaxation((k_lo,), b_lo, (k_up,), b_up)

    def init_opt(self, params: Params, iv: Interval) -> dict[str, Tensor]:
        k_lo, k_up = default_slopes(self.fn_of(params), iv.lower, iv.upper)
        return {"k_lower": k_lo, "k_upper": k_up}


class SmoothFamily(SmoothActivation):
    """A smooth activation with numeric params (ELU's alpha, softplus's threshold): ``make``
    builds the :class:`SmoothFn` of a params dict (``defaults`` fill absent keys; one
    function per distinct value, cached). Its derivative is the op ``derivative_kind`` with
    the same params (None: this is a derivative, not differentiated again)."""

    def __init__(self, kind: str, make: Callable[..., SmoothFn], defaults: Mapping[str, float],
                 derivative_kind: str | None = None) -> None:
        self.make, self.defaults = make, dict(defaults)
        self._cache: dict[tuple[float, ...], SmoothFn] = {}
        super().__init__(self.fn_of({}), kind)
        self.derivative_kind = derivative_kind
        self.differentiable = derivative_kind is not None

    def _values(self, params: Params) -> tuple[float, ...]:
        return tuple(float(params.get(k, v)) for k, v in self.defaults.items())

    def fn_of(self, params: Params) -> SmoothFn:
        key = self._values(params)
        if key not in self._cache:
            self._cache[key] = self.make(*key)
        return self._cache[key]

    def derivative(self, params: Params) -> tuple[str, dict[str, Any]] | None:
        if self.derivative_kind is None:
            return None
        return self.derivative_kind, dict(zip(self.defaults, self._values(params)))


# ---------------------------------------------------------------- the functions and derivatives
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _phi(x: Tensor) -> Tensor:
    return torch.exp(-0.5 * x * x) * _INV_SQRT_2PI


def _Phi(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(x / _SQRT2))


def _dsig(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s)


def _d2sig(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s) * (1 - 2 * s)


def _dtanh(x: Tensor) -> Tensor:
    t = torch.tanh(x)
    return 1 - t * t


def _d2tanh(x: Tensor) -> Tensor:
    t = torch.tanh(x)
    return -2 * t * (1 - t * t)


def _dgelu(x: Tensor) -> Tensor:
    return _Phi(x) + x * _phi(x)


def _d2gelu(x: Tensor) -> Tensor:
    return _phi(x) * (2 - x * x)


def _dsilu(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def _d2silu(x: Tensor) -> Tensor:
    return _dsig(x) * (2 + x * (1 - 2 * torch.sigmoid(x)))


def _d3silu(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    ds = s * (1 - s)
    return _d2sig(x) * (2 + x * (1 - 2 * s)) + ds * ((1 - 2 * s) - 2 * x * ds)


def _elu(x: Tensor) -> Tensor:
    return torch.where(x > 0, x, torch.expm1(torch.clamp(x, max=0)))


def _delu(x: Tensor) -> Tensor:
    return torch.where(x > 0, torch.ones_like(x), torch.exp(torch.clamp(x, max=0)))


def sign_changes(g: Callable[[Tensor], Tensor], lo: float = -40.0, hi: float = 40.0,
                 n: int = 400_001) -> tuple[float, ...]:
    """Zeros of g on [lo, hi] located by sign changes on a fine float64 grid and refined by
    bisection (used once at import for breakpoints without a closed form)."""
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    v = g(x)
    idx = torch.nonzero(torch.sign(v[:-1]) * torch.sign(v[1:]) < 0).flatten()
    roots = []
    for i in idx.tolist():
        a, b = x[i].clone(), x[i + 1].clone()
        for _ in range(80):
            m = (a + b) / 2
            if torch.sign(g(m)) == torch.sign(g(a)):
                a = m
            else:
                b = m
        roots.append(float((a + b) / 2))
    return tuple(roots)


_SIG_INFL = math.log((3 - math.sqrt(3)) / (3 + math.sqrt(3)))  # where sigmoid''' = 0
_TANH_INFL = math.atanh(1 / math.sqrt(3))  # where tanh''' = 0

SIGMOID = SmoothFn("sigmoid", torch.sigmoid, _dsig, (0.0,), 0.25, slopes=(0.0, 0.25))
TANH = SmoothFn("tanh", torch.tanh, _dtanh, (0.0,), 1.0, slopes=(0.0, 1.0))
GELU = SmoothFn("gelu", lambda x: x * _Phi(x), _dgelu, (-_SQRT2, _SQRT2), 1.12891)
SILU = SmoothFn("silu", lambda x: x * torch.sigmoid(x), _dsilu,
                sign_changes(_d2silu, -20.0, 20.0, 40_001), 1.0999)
# derivatives, as functions of the pre-activation, for Clarke-Jacobian graphs
D_SIGMOID = SmoothFn("d_sigmoid", _dsig, _d2sig, (_SIG_INFL, -_SIG_INFL), 0.0963)
D_TANH = SmoothFn("d_tanh", _dtanh, _d2tanh, (-_TANH_INFL, _TANH_INFL), 0.7699)
D_GELU = SmoothFn("d_gelu", _dgelu, _d2gelu, (-2.0, 0.0, 2.0), 0.7979)
D_SILU = SmoothFn("d_silu", _dsilu, _d2silu, sign_changes(_d3silu, -20.0, 20.0, 40_001), 0.50001)


ACTIVATIONS = {fn.name: fn for fn in (SIGMOID, TANH, GELU, SILU)}
DERIVATIVES = {"sigmoid": D_SIGMOID, "tanh": D_TANH, "gelu": D_GELU, "silu": D_SILU}

for _fn in ACTIVATIONS.values():
    register(SmoothActivation(_fn, derivative_fn=DERIVATIVES[_fn.name]))
for _fn in DERIVATIVES.values():
    register(SmoothActivation(_fn))


# -- ATen converters (lipbound.ops.tracing)

@converts("aten.gelu.default")
def _gelu(b, fx, x, approximate="none"):
    b.add(fx, "gelu" if approximate == "none" else "gelu_tanh", [x])


for _kind in ("sigmoid", "tanh", "silu"):
    converts(f"aten.{_kind}.default")(unary(_kind))
