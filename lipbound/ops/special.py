"""More smooth activations on the any-slope mechanism of :mod:`lipbound.ops.smooth`: atan,
erf, GELU with the tanh approximation and Mish, with their derivatives.

Each is a :class:`~lipbound.ops.smooth.SmoothFn`: f, f' in closed form and the breakpoints
between the monotone pieces of f' (the zeros of f''); the derivative op's breakpoints are the
zeros of f'''. Where those have a closed form it is used (atan: f'' = -2x / (1 + x^2)^2 is
zero at 0 and f''' at +-1/sqrt(3); erf: f'' = -2x f' and f''' = (4x^2 - 2) f', zeros 0 and
+-1/sqrt(2)); GELU-tanh's and Mish's are located once at import by sign changes on a fine
float64 grid of [-20, 20] (f' is constant to rounding outside). The closed-form derivatives
were checked against autograd (tests/ops/test_ops_activations.py). ``lipschitz`` (sup |f'|)
and ``slopes`` (inf f', sup f') are grid maxima over [-30, 30] rounded outward by >= 1e-5
(f' tends to 0 or 1 outside). Evaluation error: the smooth mechanism's EVAL_ULPS = 8 ulps of
max(|x|, |f(x)|): torch's atan and erf are library calls accurate to a few ulps; GELU-tanh
and Mish are 4-6 rounded operations and library calls (tanh, log1p, exp) of a few ulps each,
whose errors reach the result multiplied by at most |x| and a derivative of at most 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lipbound.ops.registry import register
from lipbound.ops.smooth import SmoothActivation, SmoothFn, sign_changes
from lipbound.ops.tracing import converts, unary

# -- atan


def _datan(x: Tensor) -> Tensor:
    return 1.0 / (1.0 + x * x)


def _d2atan(x: Tensor) -> Tensor:
    return -2.0 * x / (1.0 + x * x) ** 2


_ATAN_INFL = 1.0 / math.sqrt(3.0)
ATAN = SmoothFn("atan", torch.atan, _datan, (0.0,), 1.0, slopes=(0.0, 1.0))
D_ATAN = SmoothFn("d_atan", _datan, _d2atan, (-_ATAN_INFL, _ATAN_INFL),
                  3.0 * math.sqrt(3.0) / 8.0 + 1e-9)

# -- erf
_TWO_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _derf(x: Tensor) -> Tensor:
    return _TWO_SQRT_PI * torch.exp(-x * x)


def _d2erf(x: Tensor) -> Tensor:
    return -2.0 * x * _derf(x)


_ERF_INFL = 1.0 / math.sqrt(2.0)
ERF = SmoothFn("erf", torch.erf, _derf, (0.0,), _TWO_SQRT_PI + 1e-12,
               slopes=(0.0, _TWO_SQRT_PI + 1e-12))
D_ERF = SmoothFn("d_erf", _derf, _d2erf, (-_ERF_INFL, _ERF_INFL), 0.96789)

# -- GELU, tanh approximation: 0.5 x (1 + tanh(c (x + a x^3)))
_C = math.sqrt(2.0 / math.pi)
_A = 0.044715


def _gt_parts(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """t = tanh(v), v' and v'' for v = c (x + a x^3)."""
    t = torch.tanh(_C * (x + _A * x ** 3))
    return t, _C * (1 + 3 * _A * x * x), 6 * _A * _C * x


def _gelu_tanh(x: Tensor) -> Tensor:
    return 0.5 * x * (1 + torch.tanh(_C * (x + _A * x ** 3)))


def _dgelu_tanh(x: Tensor) -> Tensor:
    t, v1, _ = _gt_parts(x)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * v1


def _gt_g(x: Tensor, t: Tensor, v1: Tensor, v2: Tensor) -> Tensor:
    return v1 - x * t * v1 * v1 + 0.5 * x * v2


def _d2gelu_tanh(x: Tensor) -> Tensor:
    t, v1, v2 = _gt_parts(x)
    return (1 - t * t) * _gt_g(x, t, v1, v2)


def _d3gelu_tanh(x: Tensor) -> Tensor:
    t, v1, v2 = _gt_parts(x)
    s = 1 - t * t
    gp = v2 - s * v1 ** 3 * x - t * v1 * v1 - 2 * x * t * v1 * v2 + 0.5 * v2 + 3 * _A * _C * x
    return s * (-2 * t * v1 * _gt_g(x, t, v1, v2) + gp)


GELU_TANH = SmoothFn("gelu_tanh", _gelu_tanh, _dgelu_tanh,
                     sign_changes(_d2gelu_tanh, -20.0, 20.0, 40_001), 1.12900,
                     slopes=(-0.12900, 1.12900))
D_GELU_TANH = SmoothFn("d_gelu_tanh", _dgelu_tanh, _d2gelu_tanh,
                       sign_changes(_d3gelu_tanh, -20.0, 20.0, 40_001), 0.79789)

# -- Mish: x tanh(softplus(x))


def _softplus0(x: Tensor) -> Tensor:
    return torch.relu(x) + torch.log1p(torch.exp(-x.abs()))


def _mish(x: Tensor) -> Tensor:
    return x * torch.tanh(_softplus0(x))


def _dmish(x: Tensor) -> Tensor:
    t, s = torch.tanh(_softplus0(x)), torch.sigmoid(x)
    return t + x * (1 - t * t) * s


def _d2mish(x: Tensor) -> Tensor:
    t, s = torch.tanh(_softplus0(x)), torch.sigmoid(x)
    return (1 - t * t) * s * (2 + x * (1 - s - 2 * t * s))


def _d3mish(x: Tensor) -> Tensor:
    """Elementwise autograd of f'' (used once, to locate the zeros of f''')."""
    with torch.enable_grad():
        z = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(_d2mish(z).sum(), z)
    return g


MISH = SmoothFn("mish", _mish, _dmish, sign_changes(_d2mish, -20.0, 20.0, 40_001), 1.08860,
                slopes=(-0.11253, 1.08860))
D_MISH = SmoothFn("d_mish", _dmish, _d2mish, sign_changes(_d3mish, -20.0, 20.0, 40_001),
                  0.64430)

FUNCTIONS = {"atan": (ATAN, D_ATAN), "erf": (ERF, D_ERF), "gelu_tanh": (GELU_TANH, D_GELU_TANH),
             "mish": (MISH, D_MISH)}

for _fn, _d in FUNCTIONS.values():
    register(SmoothActivation(_fn, derivative_fn=_d))
    register(SmoothActivation(_d))


# -- ATen converters (lipbound.ops.tracing); GELU's is in ops/smooth.py (approximate='tanh')

for _kind in ("atan", "erf", "mish"):
    converts(f"aten.{_kind}.default")(unary(_kind))
