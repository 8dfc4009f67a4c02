"""Smooth activations with numeric params, and the ATen activations that lower to them.

- ``elu`` (param ``alpha`` > 0) and its derivative ``d_elu``: f' jumps at 0 when alpha != 1,
  so the derivative's bounds hold the segment between alpha and 1 there (its Clarke set);
- ``softplus`` (param ``threshold``: torch's switch to the identity above it; inf for none)
  and ``d_softplus``.

Exact lowerings at trace time (no looser: a scale on each side of one activation node keeps
every relaxation of the activation, mapped by the scales): softplus(beta, threshold) =
softplus(beta x) / beta with the switch at beta x > threshold (as torch computes it);
log_sigmoid(x) = -softplus(-x) with no switch; ELU(alpha, scale, input_scale) =
(scale / s) ELU_{alpha s}(s x); SELU = scale ELU_alpha(x) with torch's constants; CELU(x; a)
= a ELU_1(x / a). The scales' own roundings are those of ``scale_shift`` nodes in the
forward-execution allowance (never smaller than torch's evaluation of the fused kernel).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from lipbound.ops.registry import register
from lipbound.ops.smooth import SmoothFamily, SmoothFn, _dsig
from lipbound.ops.tracing import Var, converts, unsupported

# -- families with params: ELU(alpha), softplus with torch's threshold switch (and derivatives)

def _elu_fns(alpha: float) -> tuple[SmoothFn, SmoothFn]:
    """ELU_alpha(x) = x (x > 0), alpha (e^x - 1) (x <= 0), alpha > 0; f' = 1 and alpha e^x
    is monotone on each side of 0 and jumps there when alpha != 1 (its Clarke set at 0 is
    the segment between alpha and 1: the derivative's ``jumps``)."""
    if not alpha > 0:
        raise ValueError(f"ELU needs alpha > 0, got {alpha}")

    def f(x: Tensor) -> Tensor:
        return torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0)))

    def df(x: Tensor) -> Tensor:
        return torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(torch.clamp(x, max=0)))

    def d2f(x: Tensor) -> Tensor:
        return torch.where(x > 0, torch.zeros_like(x), alpha * torch.exp(torch.clamp(x, max=0)))

    top = max(alpha, 1.0)
    jumps = () if alpha == 1.0 else ((0.0, alpha, 1.0),)
    kinks = () if alpha == 1.0 else (0.0,)
    return (SmoothFn("elu", f, df, (0.0,), top, slopes=(0.0, top), kinks=kinks),
            SmoothFn("d_elu", df, d2f, (0.0,), alpha, slopes=(0.0, alpha), jumps=jumps))


def _softplus0(x: Tensor) -> Tensor:
    """log(1 + e^x) without overflow."""
    return torch.relu(x) + torch.log1p(torch.exp(-x.abs()))


def _softplus_fns(t: float) -> tuple[SmoothFn, SmoothFn]:
    """torch's softplus (beta 1): log(1 + e^x) for x <= t, x above the threshold t (t = inf:
    no switch, log_sigmoid's form). The switch is a jump down by log(1 + e^-t) <= e^-t at t;
    ``jumps`` puts both one-sided values in the bounds, and the jump enters an evaluation's
    error allowance (``eval_abs``: an input error crossing t moves the output by it). The
    derivative is sigmoid below t and 1 above."""
    if math.isinf(t):
        return (SmoothFn("softplus", _softplus0, torch.sigmoid, (), 1.0, slopes=(0.0, 1.0)),
                SmoothFn("d_softplus", torch.sigmoid, _dsig, (0.0,), 0.25, slopes=(0.0, 0.25)))
    at_t = float(_softplus0(torch.tensor(t, dtype=torch.float64)))
    sig_t = float(torch.sigmoid(torch.tensor(t, dtype=torch.float64)))

    def f(x: Tensor) -> Tensor:
        return torch.where(x > t, x, _softplus0(torch.clamp(x, max=t)))

    def df(x: Tensor) -> Tensor:
        return torch.where(x > t, torch.ones_like(x), torch.sigmoid(x))

    def d2f(x: Tensor) -> Tensor:
        return torch.where(x > t, torch.zeros_like(x), _dsig(x))

    return (SmoothFn("softplus", f, df, (t,), 1.0, eval_abs=math.log1p(math.exp(-t)),
                     jumps=((t, at_t, t),)),
            SmoothFn("d_softplus", df, d2f, tuple(sorted({0.0, t})), 0.25,
                     jumps=((t, sig_t, 1.0),)))


register(SmoothFamily("elu", lambda a: _elu_fns(a)[0], {"alpha": 1.0}, "d_elu"))
register(SmoothFamily("d_elu", lambda a: _elu_fns(a)[1], {"alpha": 1.0}))
register(SmoothFamily("softplus", lambda t: _softplus_fns(t)[0], {"threshold": 20.0},
                      "d_softplus"))
register(SmoothFamily("d_softplus", lambda t: _softplus_fns(t)[1], {"threshold": 20.0}))


# -- ATen converters (lipbound.ops.tracing)

def scaled_unary(b: Any, fx: Any, x: Var, kind: str, params: Mapping[str, Any],
                 s_in: float = 1.0, s_out: float = 1.0) -> Any:
    """``s_out * kind(s_in * x)`` as nodes (a ``scale_shift`` on each side where the scale is
    not 1): how softplus(beta), ELU(alpha, scale, input_scale), SELU and CELU lower exactly
    to one activation node."""
    one = {"shift": torch.tensor(0.0, dtype=torch.float64)}
    if s_in != 1.0:
        x = b.aux(fx, "in", "scale_shift", [x], x.shape,
                  {"scale": torch.tensor(s_in, dtype=torch.float64), **one})
    if s_out == 1.0:
        return b.add(fx, kind, [x], dict(params))
    y = b.aux(fx, kind, kind, [x], x.shape, dict(params))
    return b.add(fx, "scale_shift", [y], {"scale": torch.tensor(s_out, dtype=torch.float64),
                                          **one})


@converts("aten.softplus.default")
def _softplus(b, fx, x, beta=1, threshold=20):
    """softplus_beta(x) = softplus(beta x) / beta with the switch at beta x > threshold."""
    beta = float(beta)
    if not beta > 0:
        raise unsupported(fx, f"softplus needs beta > 0, got {beta}")
    scaled_unary(b, fx, x, "softplus", {"threshold": float(threshold)}, beta, 1.0 / beta)


@converts("aten.log_sigmoid.default")
def _log_sigmoid(b, fx, x):
    """log sigmoid(x) = -softplus(-x) (no threshold switch)."""
    return scaled_unary(b, fx, x, "softplus", {"threshold": math.inf}, -1.0, -1.0)


@converts("aten.elu.default")
def _elu(b, fx, x, alpha=1.0, scale=1, input_scale=1):
    """scale * (x if x > 0 else alpha (e^(s x) - 1)), s = input_scale, is
    (scale / s) ELU_{alpha s}(s x)."""
    a, c, s = float(alpha), float(scale), float(input_scale)
    if not (a > 0 and s > 0):
        raise unsupported(fx, f"ELU needs alpha > 0 and input_scale > 0, got {a} and {s}")
    scaled_unary(b, fx, x, "elu", {"alpha": a * s}, s, c / s)


@converts("aten.selu.default")
def _selu(b, fx, x):
    scaled_unary(b, fx, x, "elu", {"alpha": _SELU_ALPHA}, 1.0, _SELU_SCALE)


@converts("aten.celu.default")
def _celu(b, fx, x, alpha=1.0):
    """CELU(x; a) = a ELU(x / a)."""
    a = float(alpha)
    if not a > 0:
        raise unsupported(fx, f"CELU needs alpha > 0, got {a}")
    scaled_unary(b, fx, x, "elu", {"alpha": 1.0}, 1.0 / a, a)


#: torch's SELU constants (aten/src/ATen/native/Activation.cpp)
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


