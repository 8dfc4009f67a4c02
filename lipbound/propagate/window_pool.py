"""Windowed back-substitution through max pooling and its Clarke-Jacobian node
(``max_pool`` / ``max_pool_grad``): the op's own rule applied on the extent a
:class:`~lipbound.propagate.windows.Window` reads, with the relaxation cropped to the pool
outputs involved, so each coefficient is the same sum as in the dense computation without its
zero terms (the soundness argument of :mod:`lipbound.propagate.windows`)."""

from __future__ import annotations

from dataclasses import replace

import torch.nn.functional as F
from torch import Tensor

from lipbound.ops.facts import POOL, POOL_GRAD
from lipbound.propagate.windows import Window, forward_range, pair, zero_bias


def _pool_geom(params) -> tuple:
    k, p, d = (pair(params[n]) for n in ("kernel_size", "padding", "dilation"))
    s = pair(params["stride"]) if params["stride"] else k
    return ((k[0], s[0], p[0], d[0]), (k[1], s[1], p[1], d[1]))


def _crop_cols(t: Tensor, out_hw: tuple[int, int], rows: tuple[int, int],
               cols: tuple[int, int]) -> Tensor:
    """[..., L] with L = Ho * Wo output positions -> the positions in rows x cols, flat."""
    t = t.reshape(*t.shape[:-1], *out_hw)[..., rows[0]:rows[1], cols[0]:cols[1]]
    return t.reshape(*t.shape[:-2], -1)


def pool_backward(op, params, A: Window, rel, a_full: tuple[int, ...]
                  ) -> tuple[list, Tensor] | None:
    """Windowed back-substitution through an op whose :attr:`window_rule` is ``POOL``
    (``max_pool``; A over its output) or ``POOL_GRAD`` (``max_pool_grad``; A over the pool's
    input): the op's own rule on the window's extent (padding 0, zero-extended), with the
    relaxation cropped to the pool outputs involved; None for other rules (made dense)."""
    geom = _pool_geom(params)
    (kh, sh, ph, dh), (kw, sw, pw, dw) = geom
    local = {**params, "padding": 0}
    if op.window_rule not in (POOL, POOL_GRAD):
        return None
    if op.window_rule == POOL:  # A over the pool output [C, Ho, Wo] -> its input
        Ho, Wo = A.full[1:]
        rows, cols = (A.top, A.top + A.h), (A.left, A.left + A.w)
        eh, ew = (A.h - 1) * sh + dh * (kh - 1) + 1, (A.w - 1) * sw + dw * (kw - 1) + 1
        sel = replace(rel, onehot=_crop_cols(rel.onehot, (Ho, Wo), rows, cols),
                      dominant=_crop_cols(rel.dominant, (Ho, Wo), rows, cols),
                      max_upper=_crop_cols(rel.max_upper, (Ho, Wo), rows, cols),
                      in_shape=(A.full[0], eh, ew))
        (part,), bias = op.crown_backward(local, A.data, sel)
        i0, j0 = A.top * sh - ph, A.left * sw - pw
        H, W = rel.in_shape[1:]
        part = part[..., max(0, -i0):max(0, H - i0), max(0, -j0):max(0, W - j0)]
        return [Window(part, max(0, i0), max(0, j0), tuple(rel.in_shape))], bias
    # max_pool_grad: A over the pool input [C, H, W] -> the cotangent a [C, Ho, Wo]
    Ho, Wo = a_full[1:]
    o0, o1 = forward_range(A.top, A.top + A.h, kh, sh, ph, dh, Ho)
    q0, q1 = forward_range(A.left, A.left + A.w, kw, sw, pw, dw, Wo)
    e0, e1 = o0 * sh - ph, (o1 - 1) * sh - ph + dh * (kh - 1) + 1
    f0, f1 = q0 * sw - pw, (q1 - 1) * sw - pw + dw * (kw - 1) + 1
    r0, r1 = max(A.top, e0), min(A.top + A.h, e1)
    c0, c1 = max(A.left, f0), min(A.left + A.w, f1)
    if o1 <= o0 or q1 <= q0 or r1 <= r0 or c1 <= c0:  # no window reads these inputs: zero
        zero = (A.data[..., :1, :1, :1] * 0).expand(-1, -1, a_full[0], -1, -1)
        return ([None, Window(zero, min(o0, Ho - 1), min(q0, Wo - 1), tuple(a_full))],
                zero_bias(A).expand(A.data.shape[0], -1))

    def ext(d: Tensor) -> Tensor:
        d = d[..., r0 - A.top:r1 - A.top, c0 - A.left:c1 - A.left]
        return F.pad(d, (c0 - f0, f1 - c1, r0 - e0, e1 - r1))

    rows, cols = (o0, o1), (q0, q1)
    sub = replace(rel, candidates=_crop_cols(rel.candidates, (Ho, Wo), rows, cols),
                  dominant=_crop_cols(rel.dominant, (Ho, Wo), rows, cols),
                  a_lower=_crop_cols(rel.a_lower, (Ho, Wo), rows, cols),
                  a_upper=_crop_cols(rel.a_upper, (Ho, Wo), rows, cols),
                  in_shape=(A.full[0], e1 - e0, f1 - f0),
                  a_shape=(a_full[0], o1 - o0, q1 - q0))
    (_, part), bias = op.crown_backward(local, ext(A.data), sub)
    return [None, Window(part, o0, q0, tuple(a_full))], bias
