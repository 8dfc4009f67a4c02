"""Backward coefficients that are zero outside a window (convolution-structured CROWN rows).

The CROWN rows of one element of a spatial node ``[C, H, W]`` (an identity row) stay zero
outside the receptive field it reaches, layer after layer of convolutions, pooling and
elementwise relaxations. :class:`Window` keeps only the rectangle ``[top, top + h) x
[left, left + w)`` of every channel (``data [B, S, C, h, w]``, shared by the S rows of a tile);
:class:`Cols` keeps the columns ``idx`` of a flat node (after a flatten, before a dense
layer). Sliding-window linear ops map windows to windows by computing the op on the extent
that the window's outputs read, so each output is the same sum as in the dense computation
without its zero terms; elementwise relaxations are cropped; everything else gets the dense
tensor back (:func:`dense`). Sums over the window equal the dense sums over the whole node,
whose other terms are zero.

A coefficient shared by the batch (an expanded tensor, stride 0) stays shared through a
relaxation that does not vary over the batch inside the window (stable ReLU switches of every
spec row), so CROWN rows of the Jacobian are bounded once instead of once per spec row until
they meet an unstable neuron.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from lipbound.bounds.interval import sum_elements
from lipbound.graph.ir import Node
from lipbound.ops.base import NonlinearOp, Relaxation
from lipbound.ops.facts import COEFFS, COLUMNS, FLATTEN, SAME, SCALE, SLIDING, WindowMap


@dataclass(frozen=True)
class Window:
    """Coefficients [B, S, C, H, W] that are zero outside rows [top, top + h) and columns
    [left, left + w): ``data`` [B, S, C, h, w] holds the window."""

    data: Tensor
    top: int
    left: int
    full: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.data.shape[:2], *self.full)

    @property
    def h(self) -> int:
        return self.data.shape[-2]

    @property
    def w(self) -> int:
        return self.data.shape[-1]

    def with_data(self, data: Tensor) -> Window:
        return Window(data, self.top, self.left, self.full)

    def crop(self, t):
        """The window of a tensor broadcastable to [..., C, H, W] (others unchanged)."""
        if not isinstance(t, Tensor) or t.dim() == 0:
            return t
        H, W = self.full[1:]
        if t.shape[-1] not in (1, W) or (t.dim() > 1 and t.shape[-2] not in (1, H)):
            raise ValueError(f"cannot crop {tuple(t.shape)} to a window of {self.full}")
        if t.shape[-1] == W:
            t = t[..., self.left:self.left + self.w]
        if t.dim() > 1 and t.shape[-2] == H:
            t = t[..., self.top:self.top + self.h, :]
        return t


@dataclass(frozen=True)
class Cols:
    """Coefficients [B, S, n] that are zero outside the columns ``idx`` [k]: ``data`` [B, S, k]."""

    data: Tensor
    idx: Tensor
    n: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.data.shape[:2], self.n)


Sparse = Window | Cols


def _shared(t: Tensor) -> bool:
    return t.dim() > 0 and t.shape[0] > 1 and t.stride(0) == 0


def map_shared(fn, t: Tensor) -> Tensor:
    """fn(t) computed once for a tensor shared by the batch (expanded again), else fn(t)."""
    if _shared(t):
        out = fn(t[:1])
        return out.expand(t.shape[0], *out.shape[1:])
    return fn(t)


def dense(A):
    """The full coefficient tensor of a Window or Cols (tensors pass through)."""
    if isinstance(A, Window):
        C, H, W = A.full

        def pad(d: Tensor) -> Tensor:
            return F.pad(d, (A.left, W - A.left - A.w, A.top, H - A.top - A.h))

        return map_shared(pad, A.data)
    if isinstance(A, Cols):
        def scatter(d: Tensor) -> Tensor:
            return d.new_zeros(*d.shape[:2], A.n).index_copy(2, A.idx, d)

        return map_shared(scatter, A.data)
    return A


def add(a, b):
    """a + b for coefficients of one node (windows give their union window)."""
    if isinstance(a, Window) and isinstance(b, Window) and a.full == b.full:
        top, left = min(a.top, b.top), min(a.left, b.left)
        bottom = max(a.top + a.h, b.top + b.h)
        right = max(a.left + a.w, b.left + b.w)

        def grow(x: Window) -> Tensor:
            pads = (x.left - left, right - x.left - x.w, x.top - top, bottom - x.top - x.h)
            return map_shared(lambda d: F.pad(d, pads), x.data) if any(pads) else x.data

        da, db = grow(a), grow(b)
        if _shared(da) and _shared(db):
            s = da[:1] + db[:1]
            return Window(s.expand(da.shape[0], *s.shape[1:]), top, left, a.full)
        return Window(da + db, top, left, a.full)
    a, b = dense(a), dense(b)
    if _shared(a) and _shared(b) and a.shape == b.shape:
        s = a[:1] + b[:1]
        return s.expand(a.shape[0], *s.shape[1:])
    return a + b


def split_rows(A, at: int) -> tuple:
    """(rows [0, at), rows [at, S)) of a coefficient [B, S, ...] (dense or sparse)."""
    d = A.data if isinstance(A, (Window, Cols)) else A
    halves = (d[:, :at], d[:, at:])
    if isinstance(A, (Window, Cols)):
        return tuple(replace(A, data=h) for h in halves)
    return halves


def take_rows(A, index: Tensor):
    """Rows ``index`` of a coefficient [B, S, ...] (dense or sparse); a batch-shared
    (expanded) coefficient stays shared."""
    d = A.data if isinstance(A, (Window, Cols)) else A
    if d.shape[0] > 1 and d.stride(0) == 0:
        t = d[:1, index].expand(d.shape[0], -1, *d.shape[2:])
    else:
        t = d[:, index]
    return replace(A, data=t) if isinstance(A, (Window, Cols)) else t


def identity_windows(shape: tuple[int, ...], idx: Tensor, tile: int, chunk: int,
                     dtype: torch.dtype, device: torch.device, batch: int
                     ) -> list[tuple[Tensor, Window]]:
    """Rows [I; -I] restricted to the flat elements ``idx`` of a node [C, H, W], grouped by
    spatial tiles of ``tile`` x ``tile`` positions: (positions in [0, 2R), Window of the
    tile's rows) per group, at most ``chunk`` rows each; the window is the bounding box of
    the group's positions. Position p < R is row +e_idx[p], p >= R row -e_idx[p - R]."""
    C, H, W = shape
    R = idx.numel()
    idx = idx.to(device)
    y, x = (idx % (H * W)) // W, idx % W
    key = (y // tile) * ((W + tile - 1) // tile) + x // tile
    order = torch.argsort(key, stable=True)
    keys, counts = torch.unique_consecutive(key[order], return_counts=True)
    groups = []
    start = 0
    per = max(1, chunk // 2)
    for n in counts.tolist():
        members = order[start:start + n]
        start += n
        for lo in range(0, n, per):
            m = members[lo:lo + per]
            my, mx, mc = y[m], x[m], idx[m] // (H * W)
            top, left = int(my.min()), int(mx.min())
            h, w = int(my.max()) - top + 1, int(mx.max()) - left + 1
            k = m.numel()
            data = torch.zeros(2 * k, C, h, w, dtype=dtype, device=device)
            r = torch.arange(k, device=device)
            data[r, mc, my - top, mx - left] = 1.0
            data[r + k, mc, my - top, mx - left] = -1.0
            data = data.unsqueeze(0).expand(batch, *data.shape)
            groups.append((torch.cat([m, m + R]), Window(data, top, left, shape)))
    return groups


# ------------------------------------------------------------------ sliding-window geometry
def pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # type: ignore[return-value]


def forward_range(a0: int, a1: int, k: int, s: int, p: int, d: int, n_out: int
                   ) -> tuple[int, int]:
    """Outputs [o0, o1) of a sliding window op that read inputs in [a0, a1)."""
    o0 = max(0, -((-(a0 + p - d * (k - 1))) // s))
    o1 = min(n_out, (a1 - 1 + p) // s + 1)
    return o0, max(o0, o1)


def _forward_window(A: Window, geom, out_shape: tuple[int, int, int], apply) -> Window | None:
    """Window of op(A) for a sliding-window op ``apply(x_ext)`` with padding 0 (geom: per
    spatial dim (k, s, p, d)); x_ext is the zero-extended input region its outputs read."""
    (kh, sh, ph, dh), (kw, sw, pw, dw) = geom
    o0, o1 = forward_range(A.top, A.top + A.h, kh, sh, ph, dh, out_shape[1])
    q0, q1 = forward_range(A.left, A.left + A.w, kw, sw, pw, dw, out_shape[2])
    e0, e1 = o0 * sh - ph, (o1 - 1) * sh - ph + dh * (kh - 1) + 1  # input rows read
    f0, f1 = q0 * sw - pw, (q1 - 1) * sw - pw + dw * (kw - 1) + 1
    r0, r1 = max(A.top, e0), min(A.top + A.h, e1)
    c0, c1 = max(A.left, f0), min(A.left + A.w, f1)
    if o1 <= o0 or q1 <= q0 or r1 <= r0 or c1 <= c0:  # no output reads the window: zero
        zero = (A.data[..., :1, :1, :1] * 0).expand(-1, -1, out_shape[0], -1, -1)
        return Window(zero, min(o0, out_shape[1] - 1), min(q0, out_shape[2] - 1), out_shape)

    def run(d: Tensor) -> Tensor:
        B, S = d.shape[:2]
        d = d[..., r0 - A.top:r1 - A.top, c0 - A.left:c1 - A.left]
        d = d.reshape(B * S, *d.shape[2:])
        d = F.pad(d, (c0 - f0, f1 - c1, r0 - e0, e1 - r1))
        y = apply(d)
        return y.reshape(B, S, *y.shape[1:])

    out = map_shared(run, A.data)
    assert out.shape[-2:] == (o1 - o0, q1 - q0), (out.shape, o0, o1, q0, q1)
    return Window(out, o0, q0, out_shape)


def _transpose_window(A: Window, geom, in_shape: tuple[int, int, int], apply_t
                      ) -> Window:
    """Window of op^T(A) for a sliding-window op whose transpose on a window is
    ``apply_t(d)`` (stride s, padding 0): inputs [o0 s - p, (o1 - 1) s - p + d (k - 1)]."""
    (kh, sh, ph, dh), (kw, sw, pw, dw) = geom
    i0, j0 = A.top * sh - ph, A.left * sw - pw

    def run(d: Tensor) -> Tensor:
        B, S = d.shape[:2]
        y = apply_t(d.reshape(B * S, *d.shape[2:]))
        y = y[..., max(0, -i0):max(0, in_shape[1] - i0), max(0, -j0):max(0, in_shape[2] - j0)]
        return y.reshape(B, S, *y.shape[1:])

    out = map_shared(run, A.data)
    return Window(out, max(0, i0), max(0, j0), in_shape)


def _scale(sc, A: Window) -> Window | None:
    """x * scale (scalar, per channel or per element)."""
    if not isinstance(sc, Tensor):
        return A.with_data(A.data * sc)
    if sc.dim() > 3:
        return None
    return A.with_data(map_shared(lambda d: d * A.crop(sc), A.data))


def _sliding(m: WindowMap, A: Window, shape: tuple[int, int, int]) -> Window | None:
    """The window of a sliding-window map: the op's own map (``m.forward``; ``shape`` its
    output) or its transpose (``shape`` the op's input)."""
    if m.forward:
        return _forward_window(A, m.geometry, shape, m.kernel)
    return _transpose_window(A, m.geometry, shape, m.kernel)


def linear_backward(node: Node, op, in_shapes: Sequence[tuple[int, ...]], A
                    ) -> tuple[list, Tensor] | None:
    """(coefficients of the inputs, bias [B or 1, S]) of a linear op for sparse A, or None
    when the op states no window map (:meth:`~lipbound.ops.base.LinearOp.window_map`) that
    applies here (the caller densifies)."""
    m = op.window_map(node.params)
    if m is None:
        return None
    if isinstance(A, Cols):
        if m.form != COLUMNS:
            return None
        w = m.weight[:, A.idx]  # vjp = x W^T on the columns
        return [map_shared(lambda d: F.linear(d, w), A.data)], zero_bias(A)
    if m.form == COEFFS:
        return ([A.with_data(map_shared(lambda d, c=c: c * d, A.data)) for c in m.coeffs],
                zero_bias(A))
    if len(in_shapes) != 1:
        return None
    if m.form == FLATTEN:
        if len(in_shapes[0]) != 1:
            return None
        return [_flatten(A)], zero_bias(A)
    if m.form == SAME:
        out = A
    elif m.form == SCALE:
        out = _scale(m.scale, A)
    elif m.form != SLIDING or len(in_shapes[0]) != 3:
        return None
    else:
        out = _sliding(m, A, tuple(in_shapes[0]))
    if out is None or 0 in out.data.shape[-2:]:
        return None
    off = op.offset(node.params)
    return [out], (zero_bias(A) if off is None else dot(A, off))


def zero_bias(A) -> Tensor:
    d = A.data
    return d.new_zeros(d.shape[0] if not _shared(d) else 1, d.shape[1])


def dot(A, t: Tensor) -> Tensor:
    """sum over elements of A * t, [B or 1, S], for t broadcastable to the dense A's
    [B, S, *shape] (an offset [*shape] or a value [B or 1, 1, *shape])."""
    if isinstance(A, Tensor):
        return _product_sum(A, t)
    d = A.data
    if _shared(d) and (t.dim() < d.dim() or t.shape[0] == 1):
        d = d[:1]
    if isinstance(A, Cols):
        if t.dim() > 0 and t.shape[-1] != 1:
            t = t[..., A.idx]
        return (d * t).sum(-1)
    return _product_sum(d, A.crop(t))


def _product_sum(d: Tensor, t: Tensor) -> Tensor:
    """sum over the trailing dims of d * t, [B, S], for d [B, S, *shape]: a batched
    matrix-vector product where ``t`` is one float64 value per batch row, [B or 1, 1,
    *shape] (no [B, S, *shape] temporary; several times faster for the rounding tallies'
    <|A|, M>), else elementwise. Either way every product is summed once in some order,
    which every caller's rounding argument allows (float64 only: a float32 matmul may use
    reduced-precision kernels on GPUs)."""
    if (d.dtype == t.dtype == torch.float64 and d.dim() >= 3 and t.dim() == d.dim()
            and t.shape[1] == 1 and t.shape[0] in (1, d.shape[0]) and t.shape[2:] == d.shape[2:]):
        return torch.matmul(d.flatten(2), t.flatten(2).transpose(1, 2)).squeeze(-1)
    return sum_elements(d * t)


def _flatten(A: Window) -> Cols:
    C, H, W = A.full
    dev = A.data.device
    ys = torch.arange(A.top, A.top + A.h, device=dev)
    xs = torch.arange(A.left, A.left + A.w, device=dev)
    cs = torch.arange(C, device=dev)
    idx = (cs.reshape(-1, 1, 1) * (H * W) + ys.reshape(1, -1, 1) * W + xs.reshape(1, 1, -1))
    data = map_shared(lambda d: d.reshape(*d.shape[:2], -1), A.data)
    return Cols(data, idx.reshape(-1), C * H * W)


def crop_relaxation(rel: Relaxation, A: Window) -> Relaxation:
    vals = {}
    for f in fields(rel):
        v = getattr(rel, f.name)
        vals[f.name] = tuple(A.crop(t) for t in v) if isinstance(v, tuple) else A.crop(v)
    return replace(rel, **vals)


def is_elementwise(op, node: Node, in_shapes: Sequence[tuple[int, ...]]) -> bool:
    """Ops whose relaxation and back-substitution act element by element."""
    return (isinstance(op, NonlinearOp) and getattr(op, "elementwise", False)
            and all(tuple(s) == tuple(node.shape) for s in in_shapes))


def batch_invariant(rel: Relaxation, B: int) -> bool:
    """True when no tensor of ``rel`` varies over the batch (nor needs gradients)."""
    for f in fields(rel):
        v = getattr(rel, f.name)
        for t in (v if isinstance(v, tuple) else (v,)):
            if not isinstance(t, Tensor):
                continue
            if t.requires_grad:
                return False
            if t.dim() > 0 and t.shape[0] == B and B > 1:
                if not torch.equal(t, t[:1].expand_as(t)):
                    return False
    return True


def first_of_batch(rel: Relaxation, B: int) -> Relaxation:
    vals = {}
    for f in fields(rel):
        v = getattr(rel, f.name)

        def first(t):
            return t[:1] if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == B else t

        vals[f.name] = tuple(first(t) for t in v) if isinstance(v, tuple) else first(v)
    return replace(rel, **vals)


def elementwise_backward(op, params, A, rel: Relaxation) -> tuple[list, Tensor]:
    """op.crown_backward on a (windowed) coefficient, ``rel`` already cropped to its window;
    once for the whole batch when A is shared and the relaxation does not vary over it."""
    win = A if isinstance(A, Window) else None
    d = A.data if win is not None else A
    B = d.shape[0]
    if _shared(d) and batch_invariant(rel, B):
        parts, bias = op.crown_backward(params, d[:1], first_of_batch(rel, B))
        parts = [None if p is None else p.expand(B, *p.shape[1:]) for p in parts]
    else:
        parts, bias = op.crown_backward(params, d, rel)
    if win is not None:
        parts = [None if p is None else win.with_data(p) for p in parts]
    return list(parts), bias
