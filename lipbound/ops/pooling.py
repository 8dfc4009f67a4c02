"""Max pooling: exact intervals and the selection relaxation.

For each window with input bounds [l_j, u_j], let k* maximise l_j. Then max_j x_j >= x_{k*}
always, and max_j x_j <= x_{k*} if l_{k*} >= u_j for every other j (k* dominates), otherwise
max_j x_j <= max_j u_j. Windows are extracted with ``unfold`` and coefficients returned to the
input with its adjoint ``fold`` (so overlapping windows add up correctly).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lipbound.bounds.interval import Interval, sum_elements
from lipbound.ops.base import NonlinearOp, Params
from lipbound.ops.facts import GATE, POOL, JacobianRule
from lipbound.ops.registry import register
from lipbound.ops.tracing import converts, unsupported


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # type: ignore[return-value]


@dataclass(frozen=True)
class PoolSelection:
    """Per output element: one-hot of k* over its K candidates, dominance and max u (max
    pooling: [B, C, K, L] over a window; ``reduce_max``: [B, M, K] over a group)."""

    onehot: Tensor
    dominant: Tensor
    max_upper: Tensor
    in_shape: tuple[int, ...]


class MaxPool2d(NonlinearOp):
    """2-d max pooling; params kernel_size, stride, padding, dilation (``ceil_mode`` is
    converted into padding: :func:`ceil_padded`)."""

    kind = "max_pool"
    differentiable = True
    window_rule = POOL

    def jacobian_rule(self, params: Params, index: int) -> JacobianRule:
        """``max_pool_grad(z, g)``: g routed to each window's maximiser."""
        return JacobianRule(GATE, "max_pool_grad", params)

    def naive_factor(self, params: Params, p: float) -> float:
        """1-Lipschitz per window in l_inf; an input element lies in at most prod ceil(k / s)
        windows, so the l_p constant is at most that overlap to the power 1 / p."""
        k, s = _pair(params["kernel_size"]), _pair(params["stride"])
        overlap = math.prod(math.ceil(ki / si) for ki, si in zip(k, s))
        return 1.0 if p == math.inf else math.nextafter(overlap ** (1.0 / p), math.inf)

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        k = params["kernel_size"]
        return k * k if isinstance(k, int) else k[0] * k[1]  # the windows reaching a pixel

    def apply(self, params: Params, x: Tensor) -> Tensor:
        return F.max_pool2d(x, params["kernel_size"], params["stride"], params["padding"],
                            params["dilation"])

    def ibp(self, params: Params, iv: Interval) -> Interval:
        return Interval(self.apply(params, iv.lower), self.apply(params, iv.upper))

    def float_error(self, params: Params, errs, mags, prec) -> Tensor:
        """Exact comparisons: |max(x + e) - max(x)| <= max |e| over the window."""
        return self.apply(params, errs[0])

    def windows(self, params: Params, x: Tensor, fill: float) -> Tensor:
        """[N, C, H, W] -> [N, C, K, L] window contents, padding filled with ``fill``."""
        ph, pw = _pair(params["padding"])
        xp = F.pad(x, (pw, pw, ph, ph), value=fill)
        cols = F.unfold(xp, params["kernel_size"], dilation=params["dilation"],
                        stride=params["stride"])
        return cols.reshape(x.shape[0], x.shape[1], -1, cols.shape[-1])

    def relax(self, params: Params, iv: Interval, opt: Mapping[str, Tensor] | None = None
              ) -> PoolSelection:
        lo, up = iv.lower.squeeze(1), iv.upper.squeeze(1)
        lw = self.windows(params, lo, float("-inf"))
        uw = self.windows(params, up, float("-inf"))
        kstar = lw.argmax(2, keepdim=True)
        onehot = torch.zeros_like(lw).scatter_(2, kstar, 1.0)
        others = uw.masked_fill(onehot.bool(), float("-inf")).max(2).values
        dominant = lw.gather(2, kstar).squeeze(2) >= others
        return PoolSelection(onehot, dominant, uw.max(2).values, tuple(lo.shape[1:]))

    def backward_facts(self, params: Params, centres: Sequence[Tensor],
                       radii: Sequence[Tensor], rel: Any = None
                       ) -> tuple[Tensor, Tensor, Tensor]:
        """Lemma 2 of :mod:`lipbound.propagate.mixed`: the lower line is x_{k*}, the upper
        x_{k*} (dominant) or the window's max upper bound; the step's coefficients select
        x_{k*} with weight 1 (exact) and the fold sums them, so M = max_window radii."""
        c, r = centres[0], radii[0]
        out = self.apply(params, c).shape
        kstar = rel.onehot.argmax(2, keepdim=True)
        c_sel = self.windows(params, c, 0.0).gather(2, kstar).squeeze(2)
        y_up = torch.where(rel.dominant, c_sel, rel.max_upper)
        M = self.apply(params, r)
        return (c_sel.reshape(out).unsqueeze(1), y_up.reshape(out).unsqueeze(1),
                M.unsqueeze(1))

    def crown_backward(self, params: Params, A: Tensor, rel: PoolSelection):
        B, S = A.shape[:2]
        C, H, W = rel.in_shape
        a = A.reshape(B, S, C, 1, -1)
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        dom = rel.dominant.unsqueeze(1).unsqueeze(3)
        coef = neg + pos * dom  # weight on x_{k*}
        bias = sum_elements(pos * (~dom) * rel.max_upper.unsqueeze(1).unsqueeze(3))
        cols = (coef * rel.onehot.unsqueeze(1)).reshape(B * S, -1, rel.onehot.shape[-1])
        ph, pw = _pair(params["padding"])
        full = F.fold(cols, (H + 2 * ph, W + 2 * pw), params["kernel_size"],
                      dilation=params["dilation"], stride=params["stride"])
        A_in = full[..., ph:ph + H, pw:pw + W].reshape(B, S, C, H, W)
        return (A_in,), bias


register(MaxPool2d())


# -- ATen converters (lipbound.ops.tracing)

@converts("aten.max_pool2d.default")
def _max_pool2d(b, fx, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    val = fx.meta["val"]
    return _pool2d(b, fx, x, kernel_size, stride, padding, dilation, ceil_mode, val.shape[-2:])


@converts("aten.max_pool2d_with_indices.default")
def _max_pool2d_with_indices(b, fx, x, kernel_size, stride=(), padding=0, dilation=1,
                             ceil_mode=False):
    val = fx.meta["val"][0]
    var = _pool2d(b, fx, x, kernel_size, stride, padding, dilation, ceil_mode, val.shape[-2:])
    b.vars[fx.name] = (var, None)


def _pool2d(b, fx, x, kernel_size, stride, padding, dilation, ceil_mode, out_hw):
    stride = stride or kernel_size
    if ceil_mode:
        x = ceil_padded(b, fx, x, _pair(kernel_size), _pair(stride), _pair(padding),
                        _pair(dilation), tuple(int(v) for v in out_hw))
    params = {"kernel_size": kernel_size, "stride": stride, "padding": padding,
              "dilation": dilation}
    return b.add(fx, "max_pool", [x], params, shape=(x.shape[0], *map(int, out_hw)))


def ceil_padded(b, fx, x, k, s, p, d, out_hw):
    """``x`` replicate-padded at the bottom / right so that pooling without ``ceil_mode``
    gives ``ceil_mode``'s windows and values. A window that ``ceil_mode`` adds (or one that
    reaches into the right padding) starts inside the input or its left padding and runs past
    the last row / column, so it holds that row / column: copies of it change no maximum.
    Needs dilation 1 (with gaps a window could skip the last row / column)."""
    if any(di != 1 for di in d):
        raise unsupported(fx, "max pooling with ceil_mode=True and dilation is not supported")
    size = x.shape[-2:]
    extra = [max(0, (o - 1) * si + ki - (n + 2 * pi))
             for o, si, ki, n, pi in zip(out_hw, s, k, size, p)]
    if not any(extra):
        return x
    shape = (*x.shape[:-2], size[0] + extra[0], size[1] + extra[1])
    return b.aux(fx, "ceil_pad", "pad_mode", [x], shape,
                 {"pad": (0, extra[1], 0, extra[0]), "mode": "replicate"})
