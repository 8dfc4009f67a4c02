"""ATen calls with no op of their own, lowered at trace time to ops that exist (exact rewrites:
each lowering computes the call's function, so the ops' relaxations, Clarke-Jacobian rules and
rounding facts apply unchanged; the rounding facts of a lowering over-approximate the fused
kernel's where noted).

- ``max_pool1d`` / ``adaptive_max_pool1d``: the 2-d op on ``[C, 1, L]`` with kernel ``(1, k)``
  (the same windows, so the same maxima; max pooling's windowed back-substitution applies);
- ``adaptive_max_pool2d``: ``max_pool`` with kernel = stride when the size divides the input,
  else one ``reduce_max`` per output window (windows from floor(i n / o) to ceil((i+1) n / o),
  of uneven size) concatenated: exact, and no window is ever widened;
- ``instance_norm`` in eval: without running statistics it is GroupNorm with one group per
  channel (the same mean and variance over each channel's positions); with them it is the
  per-channel affine map of BatchNorm in eval;
- ``maximum(a, b) = b + relu(a - b)``, ``minimum(a, b) = a - relu(a - b)`` (exact; the
  rounding facts of the three nodes bound those of the exact max, which only passes on its
  inputs' errors); with a constant operand the shifted ReLU of ``clamp_min``;
- ``linalg_vector_norm`` over dims: ``p = 2`` as ``square -> sum -> pow(1/2)``, ``p = 1`` as
  ``abs -> sum``, ``p = inf`` as ``abs -> reduce_max`` (F.normalize adds its ``clamp_min(eps)``
  and a division, which exist). The square root has no Lipschitz constant at 0: Jacobian
  bounds need the norm's lower bound above 0 (or the clamp).
- ``bilinear(x1, x2, W, b)``: ``y_o = sum_j (W_o x1)_j x2_j + b_o``: one Linear on x1 to
  ``[O, I2]``, a product with broadcast x2 (McCormick per product), a sum and the bias.
- ``pixel_shuffle`` / ``pixel_unshuffle``: reshape -> permute -> reshape (a fixed permutation
  of the elements, no arithmetic);
- ``clamp`` / ``clamp_min`` / ``clamp_max`` with tensor limits: the ReLU forms of maximum and
  minimum (constant or input-dependent limits);
- ``cumsum``: an einsum with the constant upper-triangular ones (sums in any order, as the
  einsum's rounding fact allows);
- ``prod`` over a dim: a chain of products of two values (McCormick each; a product of n
  factors rounds n - 1 times in any order, each product node's fact covers its own);
  ``cumprod`` the same chain with every partial product kept, ``cummax`` / ``cummin`` a chain
  of ReLU maxima / minima;
- ``where`` / ``masked_fill`` with a constant condition: ``b + m (a - b)`` with the 0/1 mask;
- ``zeros_like`` / ``ones_like`` / ``full_like`` / ``new_zeros`` / ``new_ones`` / ``new_full``
  of an input-dependent tensor: constants (they read only its shape).
"""

from __future__ import annotations

import math

import torch

from lipbound.ops.composite import _group_norm
from lipbound.ops.pooling import ceil_padded
from lipbound.ops.scale_shift import _batch_norm
from lipbound.ops.select import where_on_comparison
from lipbound.ops.tracing import (
    Comparison,
    Refused,
    Var,
    as_per_sample,
    broadcast,
    converts,
    per_sample_shape,
    reduction_dims,
    unit_slices,
    unsupported,
)


def _one(v, default=None) -> int:
    if isinstance(v, (tuple, list)):
        if len(v) == 0:
            return default
        return int(v[0])
    return int(v)


def _pool1d(b, fx, x: Var, k: int, s: int, p: int, d: int, out_len: int,
            ceil_mode: bool = False) -> Var:
    if len(x.shape) != 2:
        raise unsupported(fx, "1-d pooling needs per-sample inputs [C, L]")
    C, L = x.shape
    x3 = b.aux(fx, "2d", "reshape", [x], (C, 1, L), {"shape": (C, 1, L)})
    if ceil_mode:
        x3 = ceil_padded(b, fx, x3, (1, k), (1, s), (0, p), (1, d), (1, out_len))
    y = b.aux(fx, "pool", "max_pool", [x3], (C, 1, out_len),
              {"kernel_size": (1, k), "stride": (1, s), "padding": (0, p), "dilation": (1, d)})
    return b.add(fx, "reshape", [y], {"shape": (C, out_len)}, shape=(C, out_len))


@converts("aten.max_pool1d.default", "aten.max_pool1d_with_indices.default")
def _max_pool1d(b, fx, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    k = _one(kernel_size)
    val = fx.meta["val"]
    out = val[0] if isinstance(val, (tuple, list)) else val
    y = _pool1d(b, fx, x, k, _one(stride, k), _one(padding), _one(dilation), out.shape[-1],
                ceil_mode)
    if isinstance(val, (tuple, list)):
        b.vars[fx.name] = (y, None)


def _windows(n: int, o: int) -> list[tuple[int, int]]:
    return [((i * n) // o, -(-((i + 1) * n) // o)) for i in range(o)]


@converts("aten.adaptive_max_pool2d.default", "aten.adaptive_max_pool1d.default")
def _adaptive_max_pool(b, fx, x, output_size):
    sizes = x.shape[1:]
    outs = tuple(int(o) if o is not None else n for o, n in zip(output_size, sizes))
    if len(sizes) == 1:
        C, L = x.shape
        x = b.aux(fx, "2d", "reshape", [x], (C, 1, L), {"shape": (C, 1, L)})
        sizes, outs = (1, L), (1, outs[0])
    if len(sizes) != 2:
        raise unsupported(fx, "adaptive max pooling needs per-sample inputs [C, L] / [C, H, W]")
    C = x.shape[0]
    if all(n % o == 0 for n, o in zip(sizes, outs)):
        k = tuple(n // o for n, o in zip(sizes, outs))
        y = b.aux(fx, "pool", "max_pool", [x], (C, *outs),
                  {"kernel_size": k, "stride": k, "padding": (0, 0), "dilation": (1, 1)})
    else:
        rows = []
        for i, (h0, h1) in enumerate(_windows(sizes[0], outs[0])):
            hs = b.aux(fx, f"h{i}", "slice", [x], (C, h1 - h0, sizes[1]),
                       {"dim": 1, "start": h0, "end": h1, "step": 1})
            cells = []
            for j, (w0, w1) in enumerate(_windows(sizes[1], outs[1])):
                ws = b.aux(fx, f"h{i}w{j}", "slice", [hs], (C, h1 - h0, w1 - w0),
                           {"dim": 2, "start": w0, "end": w1, "step": 1})
                cells.append(b.aux(fx, f"m{i}_{j}", "reduce_max", [ws], (C, 1, 1),
                                   {"dims": (1, 2), "keepdim": True}))
            rows.append(cells[0] if len(cells) == 1 else
                        b.aux(fx, f"row{i}", "concat", cells, (C, 1, outs[1]), {"dim": 2}))
        y = rows[0] if len(rows) == 1 else b.aux(fx, "cat", "concat", rows, (C, *outs),
                                                 {"dim": 1})
    shape = per_sample_shape_of(fx)
    out = b.add(fx, "reshape", [y], {"shape": shape}, shape=shape)
    b.vars[fx.name] = (out, None)


def per_sample_shape_of(fx) -> tuple[int, ...]:
    """Per-sample shape of the first value of a call that returns a tuple."""
    val = fx.meta["val"]
    v = val[0] if isinstance(val, (tuple, list)) else val
    return tuple(int(s) for s in v.shape[1:])


@converts("aten.instance_norm.default")
def _instance_norm(b, fx, x, weight, bias, running_mean, running_var, use_input_stats,
                   momentum, eps, cudnn_enabled=False):
    if use_input_stats:
        return _group_norm(b, fx, x, x.shape[0], weight, bias, eps)
    _batch_norm(b, fx, x, weight, bias, running_mean, running_var, False, momentum, eps)


def _bounded(b, fx, a, c, largest: bool, tag: str = "",
             shape: tuple[int, ...] | None = None) -> Var:
    """``max(a, c)`` (``largest``) or ``min(a, c)``, either operand a Var or a constant, as
    ReLUs: ``max(a, c) = c + relu(a - c)``, ``min(a, c) = a - relu(a - c)`` (exact). With
    ``tag`` every node is a helper named after it (several in one call), else the last one
    stands for ``fx``; ``shape``: the result's per-sample shape (default ``fx``'s)."""
    shape = per_sample_shape(fx) if shape is None else shape

    def emit(op, inputs, params):
        return b.aux(fx, tag, op, inputs, shape, params) if tag else b.add(fx, op, inputs, params)

    if isinstance(a, Var) and isinstance(c, Var):
        a, c = broadcast(b, fx, a, shape, tag + "a"), broadcast(b, fx, c, shape, tag + "b")
        d = b.aux(fx, tag + "diff", "add", [a, c], shape, {"coeffs": (1.0, -1.0)})
        r = b.aux(fx, tag + "relu", "relu", [d], shape)
        if largest:
            return emit("add", [c, r], {"coeffs": (1.0, 1.0)})
        return emit("add", [a, r], {"coeffs": (1.0, -1.0)})
    x, k = (a, c) if isinstance(a, Var) else (c, a)
    x = broadcast(b, fx, x, shape, tag + "x")
    k = as_per_sample(k, fx, len(shape)).to(torch.float64)
    one = torch.ones((), dtype=torch.float64)
    sign = 1.0 if largest else -1.0  # min(x, k) = -max(-x, -k)
    z = b.aux(fx, tag + "shift", "scale_shift", [x], shape,
              {"scale": sign * one, "shift": -sign * k})
    r = b.aux(fx, tag + "relu", "relu", [z], shape)
    return emit("scale_shift", [r], {"scale": sign * one, "shift": k})


converts("aten.maximum.default")(lambda b, fx, a, c: _bounded(b, fx, a, c, True))
converts("aten.minimum.default")(lambda b, fx, a, c: _bounded(b, fx, a, c, False))


@converts("aten.clamp.Tensor", "aten.clamp_min.Tensor", "aten.clamp_max.Tensor")
def _clamp_tensor(b, fx, x, *limits, **named):
    """``clamp`` with tensor limits (constants or input-dependent): ``min(max(x, lo), hi)``,
    the two ReLU forms above."""
    kind = str(fx.target).split(".")[1]
    lo, hi = (None, None)
    if kind == "clamp":
        lo, hi = (list(limits) + [None, None])[:2]
        lo, hi = named.get("min", lo), named.get("max", hi)
    elif kind == "clamp_min":
        lo = limits[0] if limits else named["min"]
    else:
        hi = limits[0] if limits else named["max"]
    if lo is not None and hi is not None:
        return _bounded(b, fx, _bounded(b, fx, x, lo, True, tag="lo_"), hi, False)
    if lo is not None:
        return _bounded(b, fx, x, lo, True)
    if hi is not None:
        return _bounded(b, fx, x, hi, False)
    b.alias(fx, x)


@converts("aten.linalg_vector_norm.default")
def _vector_norm(b, fx, x, ord=2, dim=None, keepdim=False, dtype=None):
    dims = reduction_dims(fx, x, dim)
    red = tuple(1 if i in dims else s for i, s in enumerate(x.shape))
    p = float(ord)
    if p == 2:
        q = b.aux(fx, "square", "square", [x], x.shape)
        s = b.aux(fx, "sum", "sum", [q], red, {"dims": dims, "keepdim": True, "scale": 1.0})
        y = b.aux(fx, "sqrt", "pow", [s], red, {"exponent": 0.5, "coeff": 1.0})
    elif p in (1, math.inf):
        a = b.aux(fx, "abs", "abs", [x], x.shape)
        if p == 1:
            y = b.aux(fx, "sum", "sum", [a], red, {"dims": dims, "keepdim": True, "scale": 1.0})
        else:
            y = b.aux(fx, "max", "reduce_max", [a], red, {"dims": dims, "keepdim": True})
    else:
        raise unsupported(fx, "only the 1-, 2- and inf-norms are supported")
    b.add(fx, "reshape", [y], {"shape": per_sample_shape(fx)})


@converts("aten.expand_as.default")
def _expand_as(b, fx, x, other):
    """``x.expand_as(other)`` (F.normalize's denominator): an ``expand`` to other's shape."""
    shape = per_sample_shape(fx)
    b.alias(fx, broadcast(b, fx, x, shape, "x"))


@converts("aten.bilinear.default")
def _bilinear(b, fx, x1, x2, weight, bias=None):
    if not (isinstance(x1, Var) and isinstance(x2, Var)) or isinstance(weight, Var) \
            or isinstance(bias, Var):
        raise unsupported(fx, "bilinear needs two input-dependent operands and constant weights")
    O, I1, I2 = weight.shape
    lead = x1.shape[:-1]
    w = weight.double().permute(0, 2, 1).reshape(O * I2, I1)
    z = b.aux(fx, "proj", "linear", [x1], lead + (O * I2,), {"weight": w, "bias": None})
    z = b.aux(fx, "rows", "reshape", [z], lead + (O, I2), {"shape": lead + (O, I2)})
    x2r = b.aux(fx, "x2", "reshape", [x2], lead + (1, I2), {"shape": lead + (1, I2)})
    x2e = broadcast(b, fx, x2r, lead + (O, I2), "x2")
    prod = b.aux(fx, "prod", "mul", [z, x2e], lead + (O, I2))
    last = len(lead) + 1
    if bias is None:
        return b.add(fx, "sum", [prod], {"dims": (last,), "keepdim": False, "scale": 1.0})
    s = b.aux(fx, "sum", "sum", [prod], lead + (O,),
              {"dims": (last,), "keepdim": False, "scale": 1.0})
    b.add(fx, "scale_shift", [s], {"scale": torch.ones((), dtype=torch.float64),
                                   "shift": bias.double()})


@converts("aten.pixel_shuffle.default")
def _pixel_shuffle(b, fx, x, r):
    """pixel_shuffle: [C r^2, H, W] -> [C, H r, W r], a fixed permutation of the elements,
    lowered exactly to reshape -> permute -> reshape."""
    c, h, w = x.shape[0] // (r * r), x.shape[1], x.shape[2]
    split = b.aux(fx, "split", "reshape", [x], (c, r, r, h, w), {"shape": (c, r, r, h, w)})
    perm = b.aux(fx, "perm", "permute", [split], (c, h, r, w, r), {"dims": (0, 3, 1, 4, 2)})
    b.add(fx, "reshape", [perm], {"shape": per_sample_shape(fx)})


@converts("aten.pixel_unshuffle.default")
def _pixel_unshuffle(b, fx, x, r):
    """pixel_unshuffle: [C, H r, W r] -> [C r^2, H, W], the inverse permutation, lowered the
    same way."""
    c, h, w = x.shape[0], x.shape[1] // r, x.shape[2] // r
    split = b.aux(fx, "split", "reshape", [x], (c, h, r, w, r), {"shape": (c, h, r, w, r)})
    perm = b.aux(fx, "perm", "permute", [split], (c, r, r, h, w), {"dims": (0, 2, 4, 1, 3)})
    b.add(fx, "reshape", [perm], {"shape": per_sample_shape(fx)})


@converts("aten.cumsum.default")
def _cumsum(b, fx, x, dim, dtype=None):
    """``cumsum`` along a per-sample dim: an einsum with the constant upper-triangular ones
    ``T[i, j] = [i <= j]`` (:class:`~lipbound.ops.fixed_maps.Einsum`)."""
    if not isinstance(x, Var):
        raise unsupported(fx, "cumsum of a constant")
    d = reduction_dims(fx, x, dim)[0]
    letters = "abcdefghijklmnopqrstuvwx"[:len(x.shape)]
    out = letters[:d] + "y" + letters[d + 1:]
    n = x.shape[d]
    tri = torch.triu(torch.ones(n, n, dtype=torch.float64))
    b.add(fx, "einsum", [x], {"equation": f"z{letters},{letters[d]}y->z{out}",
                              "consts": (tri,), "index": 0})


@converts("aten.prod.dim_int", "aten.prod.default")
def _prod(b, fx, x, dim=None, keepdim=False, dtype=None):
    """The product of the slices along ``dim`` (all elements without one), a chain of
    products of two input-dependent values (McCormick each)."""
    if not isinstance(x, Var):
        raise unsupported(fx, "prod of a constant")
    if dim is None:
        n = math.prod(x.shape)
        x, d = b.aux(fx, "flat", "reshape", [x], (n,), {"shape": (n,)}), 0
    else:
        d = reduction_dims(fx, x, dim)[0]
    parts = unit_slices(b, fx, x, d, "part")
    acc = parts[0]
    for i, p in enumerate(parts[1:], 1):
        acc = b.aux(fx, f"prod{i}", "mul", [acc, p], p.shape)
    b.add(fx, "reshape", [acc], {"shape": per_sample_shape(fx)})


@converts("aten.cumprod.default", "aten.cummax.default", "aten.cummin.default")
def _cumulative(b, fx, x, dim, dtype=None):
    """Running products (a chain of McCormick products, sequential like the kernel's) and
    running maxima / minima (``max(a, c) = c + relu(a - c)``, exact) along ``dim``; the
    indices of cummax / cummin are refused when read."""
    if not isinstance(x, Var):
        raise unsupported(fx, "a running product / maximum of a constant")
    kind = str(fx.target).split(".")[1]
    d = reduction_dims(fx, x, dim)[0]
    parts = unit_slices(b, fx, x, d, "part")
    acc = [parts[0]]
    for i, p in enumerate(parts[1:], 1):
        if kind == "cumprod":
            acc.append(b.aux(fx, f"prod{i}", "mul", [acc[-1], p], p.shape))
        else:
            acc.append(_bounded(b, fx, p, acc[-1], kind == "cummax", f"run{i}", p.shape))
    values = acc[0] if len(acc) == 1 else b.aux(fx, "values", "concat", acc, x.shape,
                                                 {"dim": d})
    if kind == "cumprod":
        return b.alias(fx, values)
    b.vars[fx.name] = (values, Refused("the indices of cummax / cummin are not supported"))


@converts("aten.where.self", "aten.where.ScalarOther", "aten.where.ScalarSelf",
          "aten.where.Scalar", "aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
def _where(b, fx, *args):
    """``where(c, a, b)`` / ``x.masked_fill(c, v)`` with a constant condition (a mask such as
    a buffer): ``b + m (a - b)`` with the 0/1 mask m, scale-shifts and a sum (exact); with a
    comparison of input-dependent values, :func:`lipbound.ops.select.where_on_comparison`."""
    if str(fx.target).startswith("aten.masked_fill"):
        x, c, v = args
        c, a, other = c, v, x
    else:
        c, a, other = args
    if isinstance(c, Comparison):
        return where_on_comparison(b, fx, c, a, other)
    if isinstance(c, Var):
        raise unsupported(fx, "the condition must be a constant or a comparison")
    shape = per_sample_shape(fx)
    m = as_per_sample(c.to(torch.float64), fx, len(shape)).expand(shape)
    if isinstance(a, Var) and isinstance(other, Var):
        a, other = broadcast(b, fx, a, shape, "a"), broadcast(b, fx, other, shape, "b")
        d = b.aux(fx, "diff", "add", [a, other], shape, {"coeffs": (1.0, -1.0)})
        md = b.aux(fx, "masked", "scale_shift", [d], shape,
                   {"scale": m.clone(), "shift": torch.zeros(())})
        return b.add(fx, "add", [other, md], {"coeffs": (1.0, 1.0)})
    if isinstance(a, Var):  # m a + (1 - m) other
        k = as_per_sample(other, fx, len(shape)).to(torch.float64)
        a = broadcast(b, fx, a, shape, "a")
        return b.add(fx, "scale_shift", [a], {"scale": m.clone(), "shift": (1 - m) * k})
    k = as_per_sample(a, fx, len(shape)).to(torch.float64)
    other = broadcast(b, fx, other, shape, "b")
    return b.add(fx, "scale_shift", [other], {"scale": 1 - m, "shift": m * k})


@converts("aten.zeros_like.default", "aten.ones_like.default", "aten.full_like.default",
          "aten.new_zeros.default", "aten.new_ones.default", "aten.new_full.default")
def _filled(b, fx, x, *args, **kwargs):
    """A tensor of one value shaped after an input-dependent one (``torch.zeros_like(h)``,
    ``h.new_full(size, v)``): a constant, whatever the input. A leading axis of the traced
    batch size is kept as a batch of one (the value is the same for every sample)."""
    kind = str(fx.target).split(".")[1]
    value = {"zeros_like": 0.0, "ones_like": 1.0, "new_zeros": 0.0, "new_ones": 1.0}.get(kind)
    if value is None:  # full_like(x, v) / new_full(x, size, v)
        value = kwargs.get("fill_value", args[0] if kind == "full_like" else args[1])
    shape = tuple(fx.meta["val"].shape)
    if shape and shape[0] == 2:
        shape = (1, *shape[1:])
    b.consts[fx.name] = torch.full(shape, float(value), dtype=torch.float64)
