"""ATen activations that are exact compositions of library ops, lowered at trace time.

- **PReLU** (one slope or one per channel; any sign): x >= 0: x, else k x. One slope k in
  [0, 1] is the ``leaky_relu`` (``relu``) node. Otherwise, per element,
  ``k x + (1 - k) relu(x)`` where k <= 1 and ``x + (1 - k) relu(-x)`` where k > 1 (the
  nodes of a part are left out when no element uses it). Both are exact, and CROWN / alpha-
  CROWN lose nothing: the relaxation of a ReLU mapped through these affine maps is the
  chord on one side and the lines through 0 with slopes between k and 1 on the other, every
  tight line of the 2-piece function max(x, k x) (convex, k <= 1) or min(x, k x) (concave,
  k > 1); the relu's kink is what branch and bound and the exact solvers split. For k in
  [0, 1] and k >= 1 both terms increase in x, so IBP of their sum is exact too; a negative
  slope makes prelu non-monotone, where IBP of the sum is looser than the exact range
  (CROWN unchanged). Clarke derivative: k + (1 - k) [0, 1] at 0, the exact set.
- **GLU** (dim d): a * sigmoid(b) for the halves a, b of x along d: two slices, a sigmoid and
  the library's product of two activations.
- **log1p** = log(1 + x) and **expm1** = exp(x) - 1: a shift and the library's log / exp
  (same concave / convex relaxations on the shifted interval). The shift's rounding counts in
  the forward-execution allowance, which is never smaller than torch's fused, more accurate
  evaluation's error.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lipbound.ops.tracing import Var, as_per_sample, converts, reduction_dims, unsupported

_F64 = torch.float64


def _ss(scale: Any, shift: float = 0.0) -> dict[str, Tensor]:
    return {"scale": torch.as_tensor(scale, dtype=_F64),
            "shift": torch.tensor(shift, dtype=_F64)}


def _channel_slopes(fx: Any, x: Var, w: Any) -> Tensor:
    """PReLU weights as a tensor broadcastable to the per-sample shape (channels: dim 0)."""
    w = as_per_sample(w, fx, len(x.shape)).to(_F64).reshape(-1)
    if w.numel() == 1:
        return w.reshape(())
    if not x.shape or w.numel() != x.shape[0]:
        raise unsupported(fx, f"PReLU has {w.numel()} slopes for input {list(x.shape)}")
    return w.reshape((-1,) + (1,) * (len(x.shape) - 1))


@converts("aten.prelu.default", "aten._prelu_kernel.default")
def _prelu(b, fx, x, weight):
    k = _channel_slopes(fx, x, weight)
    if k.dim() == 0 and 0.0 <= float(k) <= 1.0:
        kk = float(k)
        return b.add(fx, "relu" if kk == 0 else "leaky_relu", [x],
                     {} if kk == 0 else {"negative_slope": kk})
    low = k <= 1
    ones = torch.ones_like(k)
    terms = [b.aux(fx, "lin", "scale_shift", [x], x.shape, _ss(torch.where(low, k, ones)))]
    if bool(low.any()):
        r = b.aux(fx, "relu", "relu", [x], x.shape)
        terms.append(b.aux(fx, "relu_s", "scale_shift", [r], x.shape,
                           _ss(torch.where(low, 1 - k, 0 * k))))
    if not bool(low.all()):
        n = b.aux(fx, "neg", "scale_shift", [x], x.shape, _ss(-1.0))
        r = b.aux(fx, "relu_neg", "relu", [n], x.shape)
        terms.append(b.aux(fx, "relu_neg_s", "scale_shift", [r], x.shape,
                           _ss(torch.where(low, 0 * k, 1 - k))))
    total = terms[0]
    for i, t in enumerate(terms[1:]):
        last = i == len(terms) - 2
        if last:
            return b.add(fx, "add", [total, t], {"coeffs": (1.0, 1.0)})
        total = b.aux(fx, f"sum{i}", "add", [total, t], x.shape, {"coeffs": (1.0, 1.0)})
    raise AssertionError("unreachable: PReLU has at least one relu term")


@converts("aten.glu.default")
def _glu(b, fx, x, dim=-1):
    d = reduction_dims(fx, x, dim)[0]
    n = x.shape[d]
    if n % 2:
        raise unsupported(fx, f"GLU needs an even size along dim {dim}, got {n}")
    half = x.shape[:d] + (n // 2,) + x.shape[d + 1:]
    a = b.aux(fx, "a", "slice", [x], half, {"dim": d, "start": 0, "end": n // 2, "step": 1})
    g = b.aux(fx, "b", "slice", [x], half, {"dim": d, "start": n // 2, "end": n, "step": 1})
    s = b.aux(fx, "gate", "sigmoid", [g], half)
    b.add(fx, "mul", [a, s])


@converts("aten.log1p.default")
def _log1p(b, fx, x):
    z = b.aux(fx, "shift", "scale_shift", [x], x.shape, _ss(1.0, 1.0))
    b.add(fx, "log", [z])


@converts("aten.expm1.default")
def _expm1(b, fx, x):
    e = b.aux(fx, "exp", "exp", [x], x.shape)
    b.add(fx, "scale_shift", [e], _ss(1.0, -1.0))
