"""Operators of Clarke-Jacobian graphs: ReLU-like switches, products, |v| and v^2.

- ``relu_switch(z, a) = delta(z) a`` with delta = 1 (z > 0), 0 (z < 0), any of [0, 1] (z = 0).
  Stable only when l_z > 0 or u_z < 0 (strict: at z = 0 both derivatives are Clarke-valid).
  Unstable: s in [min(a, 0), max(a, 0)]. Default (CROWN): its convex hull over a in
  [l_a, u_a], ``l_a (u_a - a) / (u_a - l_a) <= s <= u_a (a - l_a) / (u_a - l_a)`` for
  l_a < 0 < u_a, ``0 <= s <= a`` for l_a >= 0 and ``a <= s <= 0`` for u_a <= 0. Optimised:
  McCormick planes of h * a with h = delta(z) bounded by lines in z (couples s to z).
- ``leaky_switch(z, a) = k a + (1 - k) relu_switch(z, a)`` (delta in {k, 1}).
- ``mul(d, a) = d a``: McCormick planes; the lower (upper) bound is a convex combination of
  the two lower (upper) planes with an optimisable weight in [0, 1] (default: the planes whose
  coefficient of a is the endpoint of d with the smaller magnitude). Also the product of two
  activations in forward graphs (gating, attention, normalisation); its Jacobian rule is the
  product rule (two ``mul`` branches, :mod:`lipbound.jacobian.build`).
- ``abs(v)``: the chord above, ``k v`` with k in [-1, 1] below (optimisable); also a forward
  activation, whose derivative is the sign step (``pwl``).
- ``square(v)``: the chord above, the tangent ``2 m v - m^2`` below at any m (optimisable);
  also ``x * x`` and ``x ** 2`` in forward graphs, with derivative ``2 v``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import Precision
from lipbound.ops.base import NonlinearOp, Params, Relaxation
from lipbound.ops.facts import PRODUCT, JacobianRule
from lipbound.ops.registry import register
from lipbound.ops.tracing import converts, unary


def _hull_weights(la: Tensor, ua: Tensor) -> tuple[Tensor, Tensor]:
    """Default plane weights (lam, mu) that cancel the h coefficient: the a-only convex hull
    for mixed-sign a; for a >= 0 they give 0 <= s <= a, for a <= 0 they give a <= s <= 0."""
    mixed = (la < 0) & (ua > 0)
    w = torch.where(mixed, ua - la, torch.ones_like(ua))
    lam = torch.where(mixed, -la / w, torch.where(la >= 0, 0.0, 1.0).to(la.dtype))
    mu = torch.where(mixed, ua / w, torch.where(la >= 0, 1.0, 0.0).to(la.dtype))
    return lam, mu


def _h_bound(coef: Tensor, t: Tensor, zl: Tensor, zu: Tensor, upper: bool
             ) -> tuple[Tensor, Tensor]:
    """(z slope, constant) of a line in z bounding ``coef * h`` from above (upper=True) or
    below, where h = delta(z) in [0, 1] is the Clarke derivative of ReLU at z in [zl, zu].

    Valid lines: h <= 1 + kappa z with kappa in [0, 1 / -zl], h >= kappa z with kappa in
    [0, 1 / zu]; ``t`` in [0, 1] picks kappa as a fraction of its largest value.
    """
    use_upper_line = (coef >= 0) if upper else (coef < 0)
    k_up = torch.where(zl < 0, t / (-zl).clamp_min(1e-300), torch.zeros_like(t))
    k_lo = torch.where(zu > 0, t / zu.clamp_min(1e-300), torch.zeros_like(t))
    slope = torch.where(use_upper_line, coef * k_up, coef * k_lo)
    const = torch.where(use_upper_line, coef, torch.zeros_like(coef))
    return slope, const


class LeakySwitch(NonlinearOp):
    """s = delta(z) a, delta in {k, 1} by the sign of z (both at z = 0); params negative_slope.

    Relaxation (z unstable, i.e. not l_z > 0 and not u_z < 0), with h = delta in [0, 1] for ReLU:
    the four McCormick planes of h * a, ``s <= u_a h``, ``s <= a - l_a (1 - h)``,
    ``s >= l_a h``, ``s >= a - u_a (1 - h)``, mixed with weights lam (upper) and mu (lower) in
    [0, 1]; the remaining ``c h`` term is bounded by a line in z (``_h_bound``) with a
    fraction t in [0, 1]. Every parameter value is sound; the defaults (t = 0 and the weights
    that cancel h) give the convex hull over a alone, with no z term. LeakyReLU(k) is
    ``k a + (1 - k)`` times the ReLU switch.
    """

    kind = "leaky_switch"
    elementwise = True

    def slope(self, params: Params) -> float:
        return float(params.get("negative_slope", 0.0))

    def apply(self, params: Params, z: Tensor, a: Tensor) -> Tensor:
        k = self.slope(params)
        return torch.where(z > 0, a, k * a)

    def ibp(self, params: Params, z: Interval, a: Interval) -> Interval:
        k = self.slope(params)
        act, inact = z.lower > 0, z.upper < 0
        lo_u = torch.minimum(a.lower, k * a.lower)
        up_u = torch.maximum(a.upper, k * a.upper)
        lo = torch.where(act, a.lower, torch.where(inact, torch.minimum(k * a.lower, k * a.upper),
                                                    lo_u))
        up = torch.where(act, a.upper, torch.where(inact, torch.maximum(k * a.lower, k * a.upper),
                                                    up_u))
        return Interval(lo, up)

    def relax(self, params: Params, z: Interval, a: Interval,
              opt: Mapping[str, Tensor] | None = None) -> Relaxation:
        k = self.slope(params)
        zl, zu, la, ua = z.lower, z.upper, a.lower, a.upper
        act, inact = zl > 0, zu < 0
        if opt is None:
            lam, mu = _hull_weights(la, ua)
            t_up = t_lo = None
        else:
            lam, mu, t_up, t_lo = opt["lam"], opt["mu"], opt["t_up"], opt["t_lo"]
        # upper: (1 - lam) a + c h - (1 - lam) la,  c = lam ua + (1 - lam) la
        c = lam * ua + (1 - lam) * la
        up_a, up_b = 1 - lam, -(1 - lam) * la
        # lower: (1 - mu) a + d h - (1 - mu) ua,  d = mu la + (1 - mu) ua
        d = mu * la + (1 - mu) * ua
        lo_a, lo_b = 1 - mu, -(1 - mu) * ua
        if t_up is None:
            up_b = up_b + c.clamp(min=0)
            lo_b = lo_b + d.clamp(max=0)
            up_z = lo_z = None
        else:
            up_z, cu = _h_bound(c, t_up, zl, zu, upper=True)
            lo_z, cl = _h_bound(d, t_lo, zl, zu, upper=False)
            up_b, lo_b = up_b + cu, lo_b + cl
        stable = act | inact
        one = torch.ones_like(up_a)
        sa = torch.where(act, one, torch.full_like(one, k))
        up_a = torch.where(stable, sa, k + (1 - k) * up_a)
        lo_a = torch.where(stable, sa, k + (1 - k) * lo_a)
        up_b = torch.where(stable, 0.0, (1 - k) * up_b)
        lo_b = torch.where(stable, 0.0, (1 - k) * lo_b)
        if up_z is not None:
            up_z = torch.where(stable, 0.0, (1 - k) * up_z)
            lo_z = torch.where(stable, 0.0, (1 - k) * lo_z)
        return Relaxation((lo_z, lo_a), lo_b, (up_z, up_a), up_b)

    def sign_only(self, params: Params, index: int) -> bool:
        """Unoptimised (t = 0, hull weights), the relaxation reads z only as stable or not."""
        return index == 0

    def tighten_mask(self, params: Params, index: int, z: Interval, a: Interval) -> Tensor:
        """Only elements whose z is unstable have a relaxation that depends on bounds."""
        return ~((z.lower > 0) | (z.upper < 0))

    def init_opt(self, params: Params, z: Interval, a: Interval) -> dict[str, Tensor]:
        """The default relaxation's parameters. Where a has mixed sign the h coefficient is 0,
        so t = 1 changes nothing yet gives the weights a nonzero gradient; elsewhere t = 0."""
        la, ua = a.lower + 0 * z.lower, a.upper + 0 * z.upper
        lam, mu = _hull_weights(la, ua)
        t = ((la < 0) & (ua > 0)).to(la.dtype)
        return {"lam": lam, "mu": mu, "t_up": t, "t_lo": t.clone()}

    def project_opt(self, params: Params, opt: dict[str, Tensor]) -> None:
        for v in opt.values():
            v.data.clamp_(0.0, 1.0)


class ReluSwitch(LeakySwitch):
    """s = delta(z) a with delta the Clarke derivative of ReLU at z."""

    kind = "relu_switch"

    def slope(self, params: Params) -> float:
        return 0.0


class Mul(NonlinearOp):
    """s = d * a elementwise (both inputs bounded); McCormick relaxation."""

    kind = "mul"
    elementwise = True
    opt_lr = 0.1
    differentiable = True

    def jacobian_rule(self, params: Params, index: int) -> JacobianRule:
        """The product rule: ``mul(x_other, g)`` to each factor."""
        return JacobianRule(PRODUCT)

    def apply(self, params: Params, d: Tensor, a: Tensor) -> Tensor:
        return d * a

    def ibp(self, params: Params, d: Interval, a: Interval) -> Interval:
        p = torch.stack([d.lower * a.lower, d.lower * a.upper, d.upper * a.lower,
                         d.upper * a.upper])
        return Interval(p.min(0).values, p.max(0).values)

    def relax(self, params: Params, d: Interval, a: Interval,
              opt: Mapping[str, Tensor] | None = None) -> Relaxation:
        dl, du, al, au = d.lower, d.upper, a.lower, a.upper
        if opt is None:
            beta, gamma = self._default_weights(d, a)
        else:
            beta, gamma = opt["beta"], opt["gamma"]
        lo_a = beta * dl + (1 - beta) * du
        lo_d = beta * al + (1 - beta) * au
        lo_b = -(beta * al * dl + (1 - beta) * au * du)
        up_a = gamma * du + (1 - gamma) * dl
        up_d = gamma * al + (1 - gamma) * au
        up_b = -(gamma * al * du + (1 - gamma) * au * dl)
        return Relaxation((lo_d, lo_a), lo_b, (up_d, up_a), up_b)

    @staticmethod
    def _default_weights(d: Interval, a: Interval) -> tuple[Tensor, Tensor]:
        """Both planes take the endpoint of d with the smaller magnitude as a's coefficient:
        in a Jacobian chain a's coefficient multiplies every later uncertainty, while d (an
        activation derivative of the forward pre-activation) is tightly bounded."""
        small_low = (d.lower.abs() <= d.upper.abs()).to(d.lower.dtype) + 0 * a.lower
        return small_low, 1 - small_low

    def init_opt(self, params: Params, d: Interval, a: Interval) -> dict[str, Tensor]:
        beta, gamma = self._default_weights(d, a)
        return {"beta": beta, "gamma": gamma}

    def project_opt(self, params: Params, opt: dict[str, Tensor]) -> None:
        opt["beta"].data.clamp_(0.0, 1.0)
        opt["gamma"].data.clamp_(0.0, 1.0)

    interval_aware = True

    def magnitude(self, params: Params, mx: Tensor, my: Tensor,
                  ivals: Sequence[Interval] | None = None) -> Tensor:
        """m_x m_y; given the factors' intervals, |y|_max m_x + |x|_max m_y + |x|_max |y|_max
        (the McCormick slopes of x and y are bounds of the other factor, the constant a
        product of bounds): linear in the magnitudes, so products of products do not square
        the absolute-value network."""
        if ivals is None:
            return mx * my
        ax = torch.minimum(ivals[0].abs_max(), mx)
        ay = torch.minimum(ivals[1].abs_max(), my)
        return ay * mx + ax * my + ax * ay

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision) -> Tensor:
        """x~ y~ (1 + delta) - x y = x~ (y~ - y) + y (x~ - x) + delta x~ y~: at most
        m_x e_y + m_y e_x + u m_x m_y (the magnitudes bound computed and exact values)."""
        (ex, ey), (mx, my) = errs, mags
        return mx * ey + my * ex + prec.u * mx * my


class Abs(NonlinearOp):
    """|v|: chord above; k v (|k| <= 1) below."""

    kind = "abs"
    exact_interval = True
    elementwise = True
    differentiable = True

    def lipschitz(self, params: Params) -> float:
        return 1.0  # and exact in floating point (eval_error 0)

    def kinks(self, params: Params) -> tuple[float, ...]:
        return (0.0,)

    def derivative(self, params: Params) -> tuple[str, dict[str, Any]]:
        """sign(v), the segment [-1, 1] at 0."""
        from lipbound.ops.piecewise import pwl_params

        return "pwl", pwl_params((0.0,), (0.0, 0.0), (-1.0, 1.0), "sign")

    def apply(self, params: Params, v: Tensor) -> Tensor:
        return v.abs()

    def ibp(self, params: Params, v: Interval) -> Interval:
        lo = torch.where(v.lower > 0, v.lower, torch.where(v.upper < 0, -v.upper,
                                                            torch.zeros_like(v.lower)))
        return Interval(lo, v.abs_max())

    def tighten_mask(self, params: Params, index: int, v: Interval) -> Tensor:
        return (v.lower < 0) & (v.upper > 0)

    def _default_k(self, v: Interval) -> Tensor:
        return torch.where(v.upper + v.lower >= 0, 1.0, -1.0).to(v.lower.dtype)

    def relax(self, params: Params, v: Interval, opt: Mapping[str, Tensor] | None = None
              ) -> Relaxation:
        l, u = v.lower, v.upper
        mixed = (l < 0) & (u > 0)
        w = torch.where(mixed, u - l, torch.ones_like(u))
        up_k = torch.where(mixed, (u + l) / w, torch.where(l >= 0, 1.0, -1.0).to(l.dtype))
        up_b = torch.where(mixed, -2 * u * l / w, torch.zeros_like(l))
        k = self._default_k(v) if opt is None else opt["k"]
        lo_k = torch.where(mixed, k, torch.where(l >= 0, 1.0, -1.0).to(l.dtype))
        return Relaxation((lo_k,), torch.zeros_like(lo_k), (up_k,), up_b)

    def init_opt(self, params: Params, v: Interval) -> dict[str, Tensor]:
        return {"k": self._default_k(v)}

    def project_opt(self, params: Params, opt: dict[str, Tensor]) -> None:
        opt["k"].data.clamp_(-1.0, 1.0)


class Square(NonlinearOp):
    """v^2: chord (l + u) v - l u above, tangent 2 m v - m^2 below (any m)."""

    kind = "square"
    elementwise = True
    differentiable = True

    def apply(self, params: Params, v: Tensor) -> Tensor:
        return v * v

    def ibp(self, params: Params, v: Interval) -> Interval:
        lo = torch.where(v.lower > 0, v.lower ** 2, torch.where(v.upper < 0, v.upper ** 2,
                                                                 torch.zeros_like(v.lower)))
        return Interval(lo, v.abs_max() ** 2)

    def relax(self, params: Params, v: Interval, opt: Mapping[str, Tensor] | None = None
              ) -> Relaxation:
        l, u = v.lower, v.upper
        m = (l + u) / 2 if opt is None else opt["m"]
        return Relaxation((2 * m,), -m * m, (l + u,), -l * u)

    def init_opt(self, params: Params, v: Interval) -> dict[str, Tensor]:
        return {"m": (v.lower + v.upper) / 2}

    interval_aware = True

    def magnitude(self, params: Params, v: Tensor,
                  ivals: Sequence[Interval] | None = None) -> Tensor:
        """v^2 and the relaxation's slopes (at most 2 |v|) times |v|; given v's interval, with
        a = its largest |v|: 2 a |v| + a^2."""
        if ivals is None:
            return 2 * v * v
        a = torch.minimum(ivals[0].abs_max(), v)
        return 2 * a * v + a * a

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision) -> Tensor:
        """|x~^2 (1 + delta) - x^2| <= |x~ + x| e + u x~^2 <= 2 m e + u m^2."""
        e, m = errs[0], mags[0]
        return 2 * m * e + prec.u * m * m

    def derivative(self, params: Params) -> tuple[str, dict[str, Any]]:
        return "scale_shift", {"scale": torch.tensor(2.0, dtype=torch.float64), "shift": None}


for _op in (ReluSwitch(), LeakySwitch(), Mul(), Abs(), Square()):
    register(_op)


# -- ATen converters (lipbound.ops.tracing)

converts("aten.abs.default")(unary("abs"))
converts("aten.square.default")(unary("square"))
