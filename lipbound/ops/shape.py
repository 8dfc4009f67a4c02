"""Weight-free linear operators: reshapes, permutations, padding, pooling, slicing, concat.

Their absolute versions equal themselves (non-negative coefficients); transposes come from the
generic autodiff ``vjp`` unless a cheaper exact one is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lipbound.autodiff import vjp
from lipbound.bounds.rounding import Precision
from lipbound.ops.base import LinearOp, Params
from lipbound.ops.facts import COPY, FLATTEN, SAME, SLIDING, NormFact, WindowMap
from lipbound.ops.registry import register
from lipbound.ops.tracing import (
    Var,
    converts,
    per_sample_shape,
    reduction_dims,
    time_major,
    unsupported,
)


class CopyOp(LinearOp):
    """A linear op whose every output element is 0 or a copy of a distinct input element:
    its induced norm is at most 1 in every l_p (:data:`~lipbound.ops.facts.COPY`)."""

    def norm_fact(self, params: Params, index: int) -> NormFact:
        return COPY


def _flat_identity(n_in: int) -> tuple[Tensor, Tensor]:
    return torch.eye(n_in, dtype=torch.float64), torch.zeros(n_in, dtype=torch.float64)


class Reshape(CopyOp):
    """View as per-sample ``shape`` (Flatten, View, Reshape)."""

    kind = "reshape"
    exact_sums = True
    #: y is x in the same flat (C) order: the normaliser carries a diagonal scale-shift
    #: across it into the op after it; chains of layers read it as no layer
    flat_view = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return x.reshape(x.shape[0], *params["shape"])

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        return (A.reshape(A.shape[0], *in_shapes[0]),)

    def window_map(self, params: Params, forward: bool = False) -> WindowMap | None:
        """Forward (a transpose node's step): a flatten, where the target is flat."""
        return WindowMap(FLATTEN) if forward else None

    def flat_affine(self, params: Params, n_in: int, out_shape: tuple[int, ...]
                    ) -> tuple[Tensor, Tensor] | None:
        """A flatten (to one dimension of the same length, or a per-sample scalar when that
        length is 1) is the identity in C order."""
        flat = tuple(out_shape) == (n_in,) or (tuple(out_shape) == () and n_in == 1)
        return _flat_identity(n_in) if flat else None


class Permute(CopyOp):
    """Permutation of the per-sample dimensions (``dims`` excludes the batch dimension)."""

    kind = "permute"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return x.permute(0, *[d + 1 for d in params["dims"]])

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        inv = [0] * len(params["dims"])
        for i, d in enumerate(params["dims"]):
            inv[d] = i
        return (A.permute(0, *[d + 1 for d in inv]),)


class Pad(CopyOp):
    """Constant padding, ``pad`` in F.pad order (last dimension first): zeros, plus the
    optional constant ``fill`` (per-sample shape of the output: the value at padded places,
    0 elsewhere) as the offset."""

    kind = "pad"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return F.pad(x, params["pad"])

    def offset(self, params: Params) -> Tensor | None:
        return params.get("fill")

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision) -> Tensor:
        """Copies are exact; the fill value is the model's constant rounded to its dtype."""
        e = super().float_error(params, errs, mags, prec)
        fill = params.get("fill")
        return e if fill is None else e + prec.u * fill.abs().to(e.dtype)


class AvgPool(LinearOp):
    """Average pooling (1-, 2- or 3-d) with F.avg_pool semantics; params kernel_size, stride,
    padding, ceil_mode, count_include_pad, divisor_override, ndim."""

    kind = "avg_pool"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return self.rounded_ops(params, in_shapes) - 1  # the windows reaching a pixel

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        k = params["kernel_size"]
        taps = 1
        for v in (k if isinstance(k, (tuple, list)) else (k,) * params.get("ndim", 2)):
            taps *= v
        return taps + 1  # the window's sum and the division

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        if params.get("ndim", 2) == 1:
            return F.avg_pool1d(x, params["kernel_size"], params["stride"], params["padding"],
                                params["ceil_mode"], params["count_include_pad"])
        pool = F.avg_pool3d if params.get("ndim", 2) == 3 else F.avg_pool2d
        return pool(x, params["kernel_size"], params["stride"], params["padding"],
                            params["ceil_mode"], params["count_include_pad"],
                            params.get("divisor_override"))

    def window_map(self, params: Params, forward: bool = False) -> WindowMap | None:
        """2-d pooling whose divisor is the kernel size everywhere (no ceil mode, no divisor
        override, padding counted): pooling without padding (forward) or its transpose (by
        autodiff: the dense vjp's own kernel), on the window's extent."""
        if params.get("ndim", 2) != 2 or params["ceil_mode"] or params.get("divisor_override"):
            return None
        k, p = _pair(params["kernel_size"]), _pair(params["padding"])
        s = _pair(params["stride"]) if params["stride"] else k
        if (p[0] or p[1]) and not params["count_include_pad"]:
            return None  # the divisor depends on where the padding is
        geom = ((k[0], s[0], p[0], 1), (k[1], s[1], p[1], 1))
        if forward:
            return WindowMap(SLIDING, geometry=geom, forward=True,
                             kernel=lambda x: F.avg_pool2d(x, k, s, 0))

        def transpose(a: Tensor) -> Tensor:
            size = ((a.shape[-2] - 1) * s[0] + k[0], (a.shape[-1] - 1) * s[1] + k[1])
            with torch.enable_grad():
                x = torch.zeros(a.shape[0], a.shape[1], *size, dtype=a.dtype,
                                device=a.device, requires_grad=True)
                y = F.avg_pool2d(x, k, s, 0)
                return vjp(y, x, a, create_graph=a.requires_grad)[0]

        return WindowMap(SLIDING, geometry=geom, kernel=transpose)


class Slice(CopyOp):
    """x[..., start:end:step] along per-sample dimension ``dim``."""

    kind = "slice"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        index = (slice(None),) * (params["dim"] + 1)
        return x[index + (slice(params["start"], params["end"], params["step"]),)]


class Concat(CopyOp):
    """Concatenation along per-sample dimension ``dim``."""

    kind = "concat"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, *xs: Tensor, absolute: bool = False) -> Tensor:
        return torch.cat(xs, dim=params["dim"] + 1)

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        sizes = [s[params["dim"]] for s in in_shapes]
        return tuple(A.split(sizes, dim=params["dim"] + 1))


class Identity(CopyOp):
    """y = x (Identity, Dropout in eval mode, aliases)."""

    kind = "identity"
    exact_sums = True
    flat_view = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return x

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        return (A,)

    def window_map(self, params: Params, forward: bool = False) -> WindowMap:
        return WindowMap(SAME)

    def flat_affine(self, params: Params, n_in: int, out_shape: tuple[int, ...]
                    ) -> tuple[Tensor, Tensor]:
        return _flat_identity(n_in)


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # type: ignore[return-value]


for _op in (Reshape(), Permute(), Pad(), AvgPool(), Slice(), Concat(), Identity()):
    register(_op)


# -- ATen converters (lipbound.ops.tracing)

@converts(
    "aten.view.default",
    "aten.reshape.default",
    "aten._unsafe_view.default",
    "aten.flatten.using_ints",
    "aten.unsqueeze.default",
    "aten.squeeze.dim",
    "aten.squeeze.dims",
)
def _reshape(b, fx, x, *_, **__):
    shape = per_sample_shape(fx)
    if shape == x.shape:
        return b.alias(fx, x)
    b.add(fx, "reshape", [x], {"shape": shape})


@converts(
    "aten.contiguous.default",
    "aten.clone.default",
    "aten.alias.default",
    "aten.detach.default",
)
def _identity(b, fx, x, *_, **__):
    b.alias(fx, x)


@converts("aten.dropout.default")
def _dropout(b, fx, x, p=0.5, train=False):
    if train:
        raise unsupported(fx, "dropout in training mode; call model.eval()")
    b.alias(fx, x)


@converts("aten.permute.default")
def _permute(b, fx, x, dims):
    nd = len(x.shape) + 1
    dims = [d % nd for d in dims]
    if dims[:2] == [1, 0] and dims[2:] == sorted(dims[2:]):  # x.transpose(0, 1): time-major
        return time_major(b, fx, x)
    if dims[0] != 0:
        raise unsupported(fx, "permutations that move the batch dimension are not supported")
    b.add(fx, "permute", [x], {"dims": tuple(d - 1 for d in dims[1:])})


@converts("aten.transpose.int")
def _transpose(b, fx, x, d0, d1):
    nd = len(x.shape) + 1
    dims = list(range(nd))
    d0, d1 = d0 % nd, d1 % nd
    dims[d0], dims[d1] = dims[d1], dims[d0]
    _permute(b, fx, x, dims)


@converts("aten.cat.default")
def _cat(b, fx, xs, dim=0):
    nd = len(per_sample_shape(fx)) + 1
    dim = dim % nd
    if dim == 0:
        raise unsupported(fx, "concatenation along the batch dimension is not supported")
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
                raise unsupported(fx, "a concatenated constant varies along the batch "
                                      "dimension")
            n = c.shape[dim + 1]
            shift.narrow(dim, offset, n).copy_(c[0].to(torch.float64))
        offset += n
    total = padded[0]
    for i, v in enumerate(padded[1:]):
        total = b.aux(fx, f"sum{i}", "add", [total, v], shape, {"coeffs": (1.0, 1.0)})
    return b.add(fx, "scale_shift", [total], {"scale": torch.ones((), dtype=torch.float64),
                                              "shift": shift})


@converts("aten.slice.Tensor")
def _slice(b, fx, x, dim=0, start=None, end=None, step=1):
    nd = len(x.shape) + 1
    dim = dim % nd
    if dim == 0:
        if (start in (None, 0)) and (end is None or end >= 2) and step == 1:
            return b.alias(fx, x)
        raise unsupported(fx, "slicing the batch dimension is not supported")
    b.add(fx, "slice", [x], {"dim": dim - 1, "start": start, "end": end, "step": step})


@converts("aten.slice_scatter.default")
def _slice_scatter(b, fx, x, src, dim=0, start=None, end=None, step=1):
    """``x`` with ``x[..., start:end]`` along ``dim`` replaced by ``src`` (what an in-place
    write to a slice, ``h[:, :2] *= 0.5``, becomes once functionalised): ``x`` times a 0/1
    mask plus ``src`` zero-padded into place. Products with 0 / 1 and sums with 0 are exact,
    so the values are the copies the kernel makes."""
    shape = per_sample_shape(fx)
    nd = len(shape) + 1
    dim = dim % nd
    if dim == 0 or step != 1:
        raise unsupported(fx, "writing to a slice of the batch dimension or with a step is "
                              "not supported")
    n = shape[dim - 1]
    lo = 0 if start is None else (start % n if start < 0 else min(start, n))
    hi = n if end is None else (end % n if end < 0 else min(end, n))
    _scatter_into(b, fx, x, src, dim - 1, lo, max(hi, lo))


@converts("aten.copy.default")
def _copy(b, fx, x, src, non_blocking=False):
    """``x.copy_(src)`` functionalised: the values of ``src`` in ``x``'s place."""
    if not isinstance(src, Var) or tuple(src.shape) != tuple(per_sample_shape(fx)):
        raise unsupported(fx, "only copies of an activation of the same shape are supported")
    b.alias(fx, src)


@converts("aten.select_scatter.default")
def _select_scatter(b, fx, x, src, dim, index):
    """``x`` with ``x.select(dim, index)`` replaced by ``src`` (``h[:, 0] = ...``)."""
    shape = per_sample_shape(fx)
    dim = dim % (len(shape) + 1)
    if dim == 0:
        raise unsupported(fx, "writing to an index of the batch dimension is not supported")
    index = index % shape[dim - 1]
    part = list(shape)
    part[dim - 1] = 1
    if isinstance(src, Var):
        src = b.aux(fx, "unsqueeze", "reshape", [src], tuple(part), {"shape": tuple(part)})
    else:
        src = torch.as_tensor(src).unsqueeze(dim)
    _scatter_into(b, fx, x, src, dim - 1, index, index + 1)


def _scatter_into(b, fx, x, src, dim: int, lo: int, hi: int) -> Var:
    """``x`` (per-sample ``dim``) with positions ``lo:hi`` replaced by ``src``; either may be
    a constant ([B or 1, ...])."""
    shape = per_sample_shape(fx)
    mask = torch.ones(shape, dtype=torch.float64)
    mask.narrow(dim, lo, hi - lo).zero_()
    shift = torch.zeros(shape, dtype=torch.float64)
    parts: list[Var] = []
    if isinstance(x, Var):
        parts.append(b.aux(fx, "keep", "scale_shift", [x], shape, {"scale": mask}))
    else:
        shift += _one_sample(fx, x) * mask
    if isinstance(src, Var):
        pad = [0, 0] * (len(shape) - dim)
        pad[-2:] = [lo, shape[dim] - hi]
        parts.append(b.aux(fx, "placed", "pad", [src], shape, {"pad": tuple(pad)}))
    else:
        shift.narrow(dim, lo, hi - lo).copy_(_one_sample(fx, src))
    total = parts[0]
    if len(parts) == 2:
        total = b.aux(fx, "sum", "add", parts, shape, {"coeffs": (1.0, 1.0)})
    return b.add(fx, "scale_shift", [total], {"scale": torch.ones((), dtype=torch.float64),
                                              "shift": shift})


def _one_sample(fx, c) -> Tensor:
    """A constant's per-sample value; refused if it varies along the batch dimension."""
    c = torch.as_tensor(c).detach().to(torch.float64)
    if c.dim() == len(per_sample_shape(fx)) + 1:
        if not bool((c == c[:1]).all()):
            raise unsupported(fx, "a constant written into an activation varies along the "
                                  "batch dimension")
        c = c[0]
    return c


@converts("aten.select.int")
def _select(b, fx, x, dim, index):
    """``x.select(dim, index)`` (``x[:, i]``): a slice of length one, then a reshape that
    drops the dimension."""
    nd = len(x.shape) + 1
    dim = dim % nd
    if dim == 0:
        raise unsupported(fx, "selecting along the batch dimension is not supported")
    index = index % x.shape[dim - 1]
    part = list(x.shape)
    part[dim - 1] = 1
    s = b.aux(fx, "slice", "slice", [x], tuple(part),
              {"dim": dim - 1, "start": index, "end": index + 1, "step": 1})
    b.add(fx, "reshape", [s], {"shape": per_sample_shape(fx)})


@converts("aten.pad.default")
def _pad(b, fx, x, pad, mode="constant", value=None):
    if mode in ("reflect", "replicate", "circular"):  # ops/fixed_maps.py
        return b.add(fx, "pad_mode", [x], {"pad": tuple(int(p) for p in pad), "mode": mode})
    if mode != "constant":
        raise unsupported(fx, "only constant, reflect, replicate and circular padding are "
                              "supported")
    params = {"pad": tuple(pad)}
    if value not in (None, 0, 0.0):
        zeros = torch.zeros((1, *x.shape), dtype=torch.float64)
        params["fill"] = F.pad(zeros, tuple(pad), value=float(value))[0]
    b.add(fx, "pad", [x], params)


@converts("aten.constant_pad_nd.default")
def _constant_pad(b, fx, x, pad, value=0):
    _pad(b, fx, x, pad, "constant", value)


def _avg_pool(ndim: int):
    """The converter of ``avg_pool{ndim}d`` (3-d: nn.AvgPool3d, and LocalResponseNorm, which
    pools squares over channels)."""

    def convert(b, fx, x, kernel_size, stride=(), padding=0, ceil_mode=False,
                count_include_pad=True, divisor_override=None):
        b.add(fx, "avg_pool", [x], {"kernel_size": kernel_size,
                                    "stride": stride or kernel_size, "padding": padding,
                                    "ceil_mode": ceil_mode,
                                    "count_include_pad": count_include_pad,
                                    "divisor_override": divisor_override, "ndim": ndim})

    return convert


_avg_pool2d = converts("aten.avg_pool2d.default")(_avg_pool(2))
converts("aten.avg_pool1d.default")(_avg_pool(1))
converts("aten.avg_pool3d.default")(_avg_pool(3))


@converts("aten.split_with_sizes.default")
def _split_sizes(b, fx, x, sizes, dim=0):
    """Parts of x along ``dim`` as ``slice`` nodes (a tuple the getitem calls pick from)."""
    d = reduction_dims(fx, x, dim)[0]
    parts, start = [], 0
    for i, n in enumerate(sizes):
        shape = x.shape[:d] + (n,) + x.shape[d + 1:]
        parts.append(b.aux(fx, f"part{i}", "slice", [x], shape,
                           {"dim": d, "start": start, "end": start + n, "step": 1}))
        start += n
    b.vars[fx.name] = tuple(parts)


@converts("aten.split.Tensor")
def _split(b, fx, x, split_size, dim=0):
    if isinstance(split_size, (list, tuple)):
        return _split_sizes(b, fx, x, split_size, dim)
    n = x.shape[reduction_dims(fx, x, dim)[0]]
    sizes = [min(split_size, n - s) for s in range(0, n, split_size)]
    _split_sizes(b, fx, x, sizes, dim)


@converts("aten.chunk.default")
def _chunk(b, fx, x, chunks, dim=0):
    n = x.shape[reduction_dims(fx, x, dim)[0]]
    _split(b, fx, x, -(-n // chunks), dim)
