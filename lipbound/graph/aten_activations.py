"""ATen handlers of activations: ReLU and its clamp spellings, leaky ReLU, hardtanh / relu6 /
hardsigmoid / two-sided clamp as one ``pwl`` node, smooth activations, sqrt / rsqrt /
reciprocal / pow as ``pow``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lipbound.graph.aten_builder import (
    Var,
    _unsupported,
)
from lipbound.ops.piecewise import hardsigmoid_params, hardtanh_params


def _relu(b, fx, x):
    b.add(fx, "relu", [x])


def _clamp(b, fx, x, min=None, max=None):
    if isinstance(min, (Tensor, Var)) or isinstance(max, (Tensor, Var)):
        raise _unsupported(fx, "clamp with tensor limits is not supported (use numbers)")
    if min is not None and max is not None:
        lo, hi = float(min), float(max)
        if not lo < hi:
            raise _unsupported(fx, f"clamp needs min < max, got {lo} and {hi}")
        return b.add(fx, "pwl", [x], hardtanh_params(lo, hi))
    if min is not None:
        return _clamp_min(b, fx, x, min)
    if max is not None:
        return _clamp_max(b, fx, x, max)
    return b.alias(fx, x)


def _shift(c: float) -> dict:
    return {"scale": torch.tensor(1.0, dtype=torch.float64),
            "shift": torch.tensor(c, dtype=torch.float64)}


def _clamp_min(b, fx, x, min):
    """max(x, c) = c + relu(x - c): a shifted ReLU (exact, relaxed as tightly)."""
    c = float(min)
    if c == 0.0:
        return b.add(fx, "relu", [x])
    z = b.aux(fx, "shift", "scale_shift", [x], x.shape, _shift(-c))
    r = b.aux(fx, "relu", "relu", [z], x.shape)
    return b.add(fx, "scale_shift", [r], _shift(c))


def _clamp_max(b, fx, x, max):
    """min(x, c) = c - relu(c - x)."""
    c = float(max)
    flip = {"scale": torch.tensor(-1.0, dtype=torch.float64),
            "shift": torch.tensor(c, dtype=torch.float64)}
    z = b.aux(fx, "flip", "scale_shift", [x], x.shape, flip)
    r = b.aux(fx, "relu", "relu", [z], x.shape)
    return b.add(fx, "scale_shift", [r], flip)


def _hardtanh(b, fx, x, min_val=-1.0, max_val=1.0):
    return _clamp(b, fx, x, min_val, max_val)


def _relu6(b, fx, x):
    b.add(fx, "pwl", [x], hardtanh_params(0.0, 6.0))


def _hardsigmoid(b, fx, x):
    b.add(fx, "pwl", [x], hardsigmoid_params())


def _power(p: float) -> Callable:
    def handler(b, fx, x):
        b.add(fx, "pow", [x], {"exponent": p, "coeff": 1.0})

    return handler


def _pow(b, fx, x, exponent):
    if isinstance(exponent, (Tensor, Var)) or not isinstance(x, Var):
        raise _unsupported(fx, "pow is supported with an input-dependent base and a constant "
                               "number as exponent")
    p = float(exponent)
    if p == 1.0:
        return b.alias(fx, x)
    if p == 2.0:
        return b.add(fx, "square", [x])
    b.add(fx, "pow", [x], {"exponent": p, "coeff": 1.0})


def _leaky_relu(b, fx, x, negative_slope=0.01):
    k = float(negative_slope)
    if k == 0.0:
        return b.add(fx, "relu", [x])
    if not 0.0 < k <= 1.0:
        raise _unsupported(fx, f"leaky_relu needs a negative slope in [0, 1], got {k}")
    b.add(fx, "leaky_relu", [x], {"negative_slope": k})


def _unary(kind: str) -> Callable:
    def handler(b, fx, x):
        b.add(fx, kind, [x])

    return handler


def _gelu(b, fx, x, approximate="none"):
    if approximate != "none":
        raise _unsupported(fx, "only the exact (erf) GELU is supported, not approximate='tanh'")
    b.add(fx, "gelu", [x])


def _softplus(b, fx, x, beta=1, threshold=20):
    if float(beta) != 1.0:
        raise _unsupported(fx, "softplus is supported with beta=1 only")
    b.add(fx, "softplus", [x])


def _elu(b, fx, x, alpha=1.0, scale=1, input_scale=1):
    if float(alpha) != 1.0 or float(scale) != 1.0 or float(input_scale) != 1.0:
        raise _unsupported(fx, "ELU is supported with alpha=1 (and no scaling) only")
    b.add(fx, "elu", [x])
