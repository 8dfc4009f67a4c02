"""ATen handlers of shape ops, pooling and reductions: reshape / permute / cat / slice / pad /
split / expand / flip, average, adaptive and max pooling, nearest upsampling, sum / mean /
max / min over per-sample dims.
"""

from __future__ import annotations

import torch

from lipbound.graph.aten_builder import (
    Var,
    _broadcast,
    _dims,
    _unsupported,
    per_sample_shape,
    where_of,
)
from lipbound.graph.ir import Node, freeze


def _reshape(b, fx, x, *_, **__):
    shape = per_sample_shape(fx)
    if shape == x.shape:
        return b.alias(fx, x)
    b.add(fx, "reshape", [x], {"shape": shape})


def _identity(b, fx, x, *_, **__):
    b.alias(fx, x)


def _dropout(b, fx, x, p=0.5, train=False):
    if train:
        raise _unsupported(fx, "dropout in training mode; call model.eval()")
    b.alias(fx, x)


def _permute(b, fx, x, dims):
    nd = len(x.shape) + 1
    dims = [d % nd for d in dims]
    if dims[0] != 0:
        raise _unsupported(fx, "permutations that move the batch dimension are not supported")
    b.add(fx, "permute", [x], {"dims": tuple(d - 1 for d in dims[1:])})


def _transpose(b, fx, x, d0, d1):
    nd = len(x.shape) + 1
    dims = list(range(nd))
    d0, d1 = d0 % nd, d1 % nd
    dims[d0], dims[d1] = dims[d1], dims[d0]
    _permute(b, fx, x, dims)


def _cat(b, fx, xs, dim=0):
    nd = len(per_sample_shape(fx)) + 1
    dim = dim % nd
    if dim == 0:
        raise _unsupported(fx, "concatenation along the batch dimension is not supported")
    if all(isinstance(v, Var) for v in xs):
        return b.add(fx, "concat", list(xs), {"dim": dim - 1})
    _cat_constants(b, fx, xs, dim - 1)


def _cat_constants(b, fx, xs, dim: int) -> Var:
    """Concatenation of input-dependent tensors with constants (a ViT's cls token): every
    input-dependent piece zero-padded to the full length along ``dim``, these summed, and
    the constants added as one shift (zeros where the pieces lie): the same values exactly
    (adding zeros is exact in floating point)."""
    shape = per_sample_shape(fx)
    shift = torch.zeros(shape, dtype=torch.float64)
    padded: list[Var] = []
    offset = 0
    for i, v in enumerate(xs):
        if isinstance(v, Var):
            n = v.shape[dim]
            pad = [0, 0] * (len(shape) - dim)
            pad[-2:] = [offset, shape[dim] - offset - n]
            padded.append(b.aux(fx, f"pad{i}", "pad", [v], shape, {"pad": tuple(pad)}))
        else:
            c = torch.as_tensor(v).detach()
            if c.dim() != len(shape) + 1 or not bool((c == c[:1]).all()):
                raise _unsupported(fx, "a concatenated constant varies along the batch "
                                       "dimension")
            n = c.shape[dim + 1]
            shift.narrow(dim, offset, n).copy_(c[0].to(torch.float64))
        offset += n
    total = padded[0]
    for i, v in enumerate(padded[1:]):
        total = b.aux(fx, f"sum{i}", "add", [total, v], shape, {"coeffs": (1.0, 1.0)})
    return b.add(fx, "scale_shift", [total], {"scale": torch.ones((), dtype=torch.float64),
                                              "shift": shift})


def _slice(b, fx, x, dim=0, start=None, end=None, step=1):
    nd = len(x.shape) + 1
    dim = dim % nd
    if dim == 0:
        if (start in (None, 0)) and (end is None or end >= 2) and step == 1:
            return b.alias(fx, x)
        raise _unsupported(fx, "slicing the batch dimension is not supported")
    b.add(fx, "slice", [x], {"dim": dim - 1, "start": start, "end": end, "step": step})


def _select(b, fx, x, dim, index):
    """``x.select(dim, index)`` (``x[:, i]``): a slice of length one, then a reshape that
    drops the dimension."""
    nd = len(x.shape) + 1
    dim = dim % nd
    if dim == 0:
        raise _unsupported(fx, "selecting along the batch dimension is not supported")
    index = index % x.shape[dim - 1]
    part = list(x.shape)
    part[dim - 1] = 1
    s = b.aux(fx, "slice", "slice", [x], tuple(part),
              {"dim": dim - 1, "start": index, "end": index + 1, "step": 1})
    b.add(fx, "reshape", [s], {"shape": per_sample_shape(fx)})


def _pad(b, fx, x, pad, mode="constant", value=None):
    if mode != "constant" or (value not in (None, 0, 0.0)):
        raise _unsupported(fx, "only zero (constant) padding is supported")
    b.add(fx, "pad", [x], {"pad": tuple(pad)})


def _constant_pad(b, fx, x, pad, value=0):
    _pad(b, fx, x, pad, "constant", value)


def _avg_pool2d(b, fx, x, kernel_size, stride=(), padding=0, ceil_mode=False,
                count_include_pad=True, divisor_override=None):
    b.add(fx, "avg_pool", [x], {"kernel_size": kernel_size, "stride": stride or kernel_size,
                                "padding": padding, "ceil_mode": ceil_mode,
                                "count_include_pad": count_include_pad,
                                "divisor_override": divisor_override, "ndim": 2})


def _avg_pool1d(b, fx, x, kernel_size, stride=(), padding=0, ceil_mode=False,
                count_include_pad=True):
    b.add(fx, "avg_pool", [x], {"kernel_size": kernel_size, "stride": stride or kernel_size,
                                "padding": padding, "ceil_mode": ceil_mode,
                                "count_include_pad": count_include_pad, "ndim": 1})


def _adaptive_avg_pool2d(b, fx, x, output_size):
    h, w = x.shape[-2:]
    oh, ow = (v if v is not None else s for v, s in zip(output_size, (h, w)))
    if h % oh or w % ow:
        return b.add(fx, "adaptive_avg_pool", [x], {"output_size": (oh, ow)})
    k = (h // oh, w // ow)
    _avg_pool2d(b, fx, x, k, k)


def _adaptive_avg_pool1d(b, fx, x, output_size):
    b.add(fx, "adaptive_avg_pool", [x], {"output_size": tuple(output_size)})


def _upsample_nearest(b, fx, x, output_size=None, scale_factors=None):
    size = per_sample_shape(fx)[1:]
    params = {"size": tuple(size), "scale_factor": None}
    if scale_factors is not None:
        params["scale_factor"] = tuple(float(v) for v in scale_factors)
    b.add(fx, "upsample_nearest", [x], params)


def _upsample_nearest2d(b, fx, x, output_size, scales_h=None, scales_w=None):
    sf = None if scales_h is None or scales_w is None else (scales_h, scales_w)
    _upsample_nearest(b, fx, x, output_size, sf)


def _sum(b, fx, x, dims=None, keepdim=False, dtype=None):
    b.add(fx, "sum", [x], {"dims": _dims(fx, x, dims), "keepdim": bool(keepdim), "scale": 1.0})


def _mean_any(b, fx, x, dims, keepdim=False):
    d = _dims(fx, x, dims)
    n = 1
    for i in d:
        n *= x.shape[i]
    b.add(fx, "sum", [x], {"dims": d, "keepdim": bool(keepdim), "scale": 1.0 / n})


def _mean(b, fx, x, dims, keepdim=False, dtype=None):
    nd = len(x.shape) + 1
    dims = sorted(d % nd for d in dims)
    if len(x.shape) != 3 or dims != [2, 3]:
        return _mean_any(b, fx, x, dims, keepdim)
    pooled = b.add(fx, "avg_pool", [x], {"kernel_size": tuple(x.shape[1:]), "stride":
                                         tuple(x.shape[1:]), "padding": 0, "ceil_mode": False,
                                         "count_include_pad": True, "divisor_override": None,
                                         "ndim": 2}, shape=(x.shape[0], 1, 1))
    if not keepdim:
        b.nodes.append(Node(fx.name + "_squeeze", "reshape", (pooled.name,), (x.shape[0],),
                            freeze({"shape": (x.shape[0],)}), where_of(fx)))
        b.vars[fx.name] = Var(fx.name + "_squeeze", (x.shape[0],))


def _amax(b, fx, x, dims=(), keepdim=False):
    b.add(fx, "reduce_max", [x], {"dims": _dims(fx, x, dims), "keepdim": bool(keepdim)})


def _amin(b, fx, x, dims=(), keepdim=False):
    """min(x) = -max(-x)."""
    neg = {"scale": torch.tensor(-1.0, dtype=torch.float64), "shift": None}
    nx = b.aux(fx, "neg", "scale_shift", [x], x.shape, neg)
    params = {"dims": _dims(fx, x, dims), "keepdim": bool(keepdim)}
    shape = per_sample_shape(fx) if not isinstance(fx.meta.get("val"), tuple) \
        else tuple(int(s) for s in fx.meta["val"][0].shape[1:])
    m = b.aux(fx, "max", "reduce_max", [nx], shape, params)
    return b.add(fx, "scale_shift", [m], neg, shape=shape)


def _max_dim(b, fx, x, dim, keepdim=False):
    shape = tuple(int(s) for s in fx.meta["val"][0].shape[1:])
    var = b.add(fx, "reduce_max", [x], {"dims": _dims(fx, x, dim), "keepdim": bool(keepdim)},
                shape=shape)
    b.vars[fx.name] = (var, None)


def _min_dim(b, fx, x, dim, keepdim=False):
    var = _amin(b, fx, x, dim, keepdim)
    b.vars[fx.name] = (var, None)


def _expand(b, fx, x, size, implicit=False):
    shape = per_sample_shape(fx)
    if len(x.shape) > len(shape):
        raise _unsupported(fx, "expand cannot drop dimensions")
    b.alias(fx, _broadcast(b, fx, x, shape, "e"))


def _split_sizes(b, fx, x, sizes, dim=0):
    """Parts of x along ``dim`` as ``slice`` nodes (a tuple the getitem calls pick from)."""
    d = _dims(fx, x, dim)[0]
    parts, start = [], 0
    for i, n in enumerate(sizes):
        shape = x.shape[:d] + (n,) + x.shape[d + 1:]
        parts.append(b.aux(fx, f"part{i}", "slice", [x], shape,
                           {"dim": d, "start": start, "end": start + n, "step": 1}))
        start += n
    b.vars[fx.name] = tuple(parts)


def _split(b, fx, x, split_size, dim=0):
    if isinstance(split_size, (list, tuple)):
        return _split_sizes(b, fx, x, split_size, dim)
    n = x.shape[_dims(fx, x, dim)[0]]
    sizes = [min(split_size, n - s) for s in range(0, n, split_size)]
    _split_sizes(b, fx, x, sizes, dim)


def _chunk(b, fx, x, chunks, dim=0):
    n = x.shape[_dims(fx, x, dim)[0]]
    _split(b, fx, x, -(-n // chunks), dim)


def _flip(b, fx, x, dims):
    b.add(fx, "flip", [x], {"dims": _dims(fx, x, dims)})


def _max_pool2d(b, fx, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    if ceil_mode:
        raise _unsupported(fx, "max pooling with ceil_mode=True is not supported")
    var = b.add(fx, "max_pool", [x], {"kernel_size": kernel_size, "stride": stride or kernel_size,
                                      "padding": padding, "dilation": dilation})
    return var


def _max_pool2d_with_indices(b, fx, x, kernel_size, stride=(), padding=0, dilation=1,
                             ceil_mode=False):
    if ceil_mode:
        raise _unsupported(fx, "max pooling with ceil_mode=True is not supported")
    val = fx.meta["val"][0]
    var = b.add(fx, "max_pool", [x], {"kernel_size": kernel_size, "stride": stride or kernel_size,
                                      "padding": padding, "dilation": dilation},
                shape=tuple(int(s) for s in val.shape[1:]))
    b.vars[fx.name] = (var, None)
