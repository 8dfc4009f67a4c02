"""Selection by a comparison of input-dependent values: ``torch.where(h > t, a, b)`` and
``x.masked_fill(h < 0, v)``.

A comparison (``gt`` / ``ge`` / ``lt`` / ``le``, a Tensor or a scalar on either side,
``logical_not`` of one) converts into a :class:`~lipbound.ops.tracing.Comparison`: the
difference ``d`` of its sides as a node, and whether the test is ``d > 0`` or ``d >= 0``. Only
``where`` / ``masked_fill`` and conversions to a floating dtype (``(h > 0).float()``, the step
``where(c, 1, 0)``) read it; anything else (``&``, ``sum`` of a mask) is refused with that
reason; ``sign`` and ``heaviside`` are two / one such selections of ones. The selection
lowers to

    where(d > 0, a, b) = b + step_select(d, a - b)
    where(d >= 0, a, b) = a + step_select(-d, b - a)

with ``step_select(z, v) = v if z > 0 else 0`` (exact in real arithmetic: b + (a - b) = a).

``step_select`` has the bounds of the ReLU switch of Clarke-Jacobian graphs
(:class:`~lipbound.ops.jacobian_ops.ReluSwitch`): stable where ``l_z > 0`` or ``u_z < 0``,
otherwise both values (0 and v) are allowed and the relaxation is their hull, so at ``z = 0``
either choice is inside. It is a step in z, so a model with one has no Lipschitz constant:
Lipschitz and Jacobian bounds are refused, output bounds are not.

Rounding (what the model's float forward can do): the model compares its computed sides
exactly, and the computed difference is within the walker's error ``e_z`` of the exact one,
so the model can take the other branch only where ``[l_z - e_z, u_z + e_z]`` holds 0; there
its output is off by at most ``|v|`` (plus ``e_v``), elsewhere by ``e_v``
(:meth:`StepSelect.float_error`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import Precision
from lipbound.ops.base import Params
from lipbound.ops.jacobian_ops import ReluSwitch
from lipbound.ops.registry import register
from lipbound.ops.tracing import (
    Comparison,
    Var,
    as_per_sample,
    broadcast,
    converts,
    per_sample_shape,
    unsupported,
)


class StepSelect(ReluSwitch):
    """``v if z > 0 else 0`` in a model's forward pass (both at z = 0: see the module)."""

    kind = "step_select"
    error_uses_intervals = True
    no_jacobian_reason = ("torch.where / masked_fill on a comparison of input-dependent "
                          "values is discontinuous where the comparison flips, so the model "
                          "has no Lipschitz constant there")

    def needs_intervals(self, params: Params) -> bool:
        return True

    def magnitude(self, params: Params, *mags: Tensor,
                  ivals: Sequence[Interval] | None = None) -> Tensor:
        """|v| (the value is v or 0 whatever the intervals)."""
        return super().magnitude(params, *mags)

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision, ivals: Sequence[Interval] | None = None) -> Tensor:
        """``e_v``, plus ``|v|`` where the computed ``z`` may fall on the other side of 0."""
        e_z, e_v = errs
        if ivals is None:
            return e_v + mags[1]
        z = ivals[0]
        flip = (z.lower - e_z <= 0) & (z.upper + e_z >= 0)
        return e_v + torch.where(flip, mags[1], torch.zeros_like(mags[1]))


register(StepSelect())

_SIDES = {"gt": (1.0, True), "ge": (1.0, False), "lt": (-1.0, True), "le": (-1.0, False)}


@converts(*(f"aten.{op}.{form}" for op in _SIDES for form in ("Scalar", "Tensor")))
def _compare(b, fx, x, y):
    """``x > y`` (etc.) of an input-dependent side: ``Comparison(d = +-(x - y))``."""
    sign, strict = _SIDES[str(fx.target).split(".")[1]]
    shape = per_sample_shape(fx)
    d = _difference(b, fx, x, y, sign, shape)
    return _keep(b, fx, Comparison(why=_WHY, diff=d, strict=strict))


@converts("aten.logical_not.default", "aten.bitwise_not.default")
def _negate(b, fx, c):
    """``~(d > 0)`` is ``-d >= 0`` (and ``~(d >= 0)`` is ``-d > 0``)."""
    if not isinstance(c, Comparison):
        raise unsupported(fx, "only the negation of a comparison is supported")
    return _keep(b, fx, Comparison(why=_WHY, diff=_negated(b, fx, c.diff, "neg"),
                                   strict=not c.strict))


@converts("aten._to_copy.default", "aten.to.dtype", "aten.to.dtype_layout")
def _cast(b, fx, x, *_, **__):
    """A dtype conversion: of a comparison, its 0/1 step (``where(c, 1, 0)``); of an
    activation, the same values when the dtype is floating and not narrower (a narrower one
    rounds where the model's graph has no rounding step, so it is refused)."""
    dst = fx.meta["val"].dtype
    if isinstance(x, Comparison):
        if not dst.is_floating_point:
            raise unsupported(fx, "a comparison converted to a non-floating dtype")
        return where_on_comparison(b, fx, x, 1.0, 0.0)
    src = fx.args[0].meta["val"].dtype
    if not (src.is_floating_point and dst.is_floating_point
            and torch.finfo(dst).bits >= torch.finfo(src).bits):
        raise unsupported(fx, f"a conversion from {src} to {dst} (only to a floating dtype at "
                              "least as wide is supported)")
    b.alias(fx, x)


@converts("aten.sign.default", "aten.heaviside.default")
def _steps(b, fx, x, values=None):
    """``sign(x) = [x > 0] - [-x > 0]`` and ``heaviside(x, v) = [x > 0]`` (v in [0, 1] at
    x = 0, which the selection's bounds there, [0, 1], contain), with ``[z > 0]`` the
    selection of a node of ones."""
    if not isinstance(x, Var):
        raise unsupported(fx, "a step of a constant")
    shape = per_sample_shape(fx)
    x = broadcast(b, fx, x, shape, "x")
    ones = _ones(b, fx, x, shape)
    if str(fx.target) == "aten.heaviside.default":
        v = as_per_sample(values, fx, len(shape))
        if not bool(((v >= 0) & (v <= 1)).all()):
            raise unsupported(fx, "heaviside with a value at 0 outside [0, 1]")
        return b.add(fx, "step_select", [x, ones])
    pos = b.aux(fx, "pos", "step_select", [x, ones], shape)
    neg = b.aux(fx, "neg", "step_select", [_negated(b, fx, x, "negx"), ones], shape)
    return b.add(fx, "add", [pos, neg], {"coeffs": (1.0, -1.0)})


@converts("aten._assert_tensor_metadata.default")
def _metadata_check(b, fx, *_, **__):
    """torch.export's check of a tensor's dtype before a conversion: computes nothing."""


_WHY = ("the result of comparing input-dependent values is supported only as the condition "
        "of torch.where or masked_fill")


def _keep(b, fx, cmp: Comparison) -> Comparison:
    b.vars[fx.name] = cmp
    return cmp


def _negated(b, fx, v: Var, tag: str) -> Var:
    """``-v`` (exact)."""
    return b.aux(fx, tag, "scale_shift", [v], v.shape,
                 {"scale": torch.tensor(-1.0, dtype=torch.float64), "shift": None})


def _ones(b, fx, v: Var, shape: tuple[int, ...]) -> Var:
    """A node of ones shaped ``shape``, ``0 v + 1`` (exact for finite v)."""
    return b.aux(fx, "ones", "scale_shift", [v], shape,
                 {"scale": torch.tensor(0.0, dtype=torch.float64),
                  "shift": torch.ones(shape, dtype=torch.float64)})


def _difference(b, fx, x, y, sign: float, shape: tuple[int, ...]) -> Var:
    """``sign * (x - y)`` broadcast to ``shape`` (either side may be a constant)."""
    if isinstance(x, Var) and isinstance(y, Var):
        xs, ys = broadcast(b, fx, x, shape, "lhs"), broadcast(b, fx, y, shape, "rhs")
        return b.aux(fx, "diff", "add", [xs, ys], shape, {"coeffs": (sign, -sign)})
    if isinstance(x, Var):
        v, c, s = x, y, sign
    else:
        v, c, s = y, x, -sign
    v = broadcast(b, fx, v, shape, "side")
    k = as_per_sample(c, fx, len(shape)).to(torch.float64)
    return b.aux(fx, "diff", "scale_shift", [v], shape,
                 {"scale": torch.tensor(s, dtype=torch.float64), "shift": -s * k})


def where_on_comparison(b, fx, cmp: Comparison, a: Any, other: Any) -> Var:
    """``where(cmp, a, other)`` for a Comparison condition (see the module docstring)."""
    shape = per_sample_shape(fx)
    z, take, base = cmp.diff, a, other
    if not cmp.strict:  # where(d >= 0, a, b) = where(-d > 0, b, a)
        z, take, base = _negated(b, fx, z, "negd"), other, a
    z = broadcast(b, fx, z, shape, "cond")
    delta, base_const = _difference_of(b, fx, take, base, z, shape)
    sel = b.aux(fx, "select", "step_select", [z, delta], shape)
    if base_const is None:
        return b.add(fx, "add", [broadcast(b, fx, base, shape, "base"), sel],
                     {"coeffs": (1.0, 1.0)})
    return b.add(fx, "scale_shift", [sel], {"scale": torch.tensor(1.0, dtype=torch.float64),
                                            "shift": base_const})


def _difference_of(b, fx, take, base, z: Var, shape) -> tuple[Var, Tensor | None]:
    """(``take - base`` as a node, ``base`` as a constant or None when it is a node)."""
    if isinstance(take, Var) or isinstance(base, Var):
        k = None if isinstance(base, Var) else as_per_sample(base, fx, len(shape)).to(
            torch.float64)
        return _difference(b, fx, take, base, 1.0, shape), k
    k_take = as_per_sample(take, fx, len(shape)).to(torch.float64)
    k_base = as_per_sample(base, fx, len(shape)).to(torch.float64)
    delta = b.aux(fx, "delta", "scale_shift", [_ones(b, fx, z, shape)], shape,
                  {"scale": (k_take - k_base).expand(shape).clone(), "shift": None})
    return delta, k_base.expand(shape).clone()
