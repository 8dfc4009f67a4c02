"""Resampling linear operators: adaptive average pooling to any output size, nearest
upsampling and flips. All have non-negative coefficients (their absolute map is themselves);
transposes come from the generic autodiff ``vjp`` unless a cheaper exact one is given."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from lipbound.ops.base import LinearOp, Params
from lipbound.ops.registry import register
from lipbound.ops.shape import _avg_pool2d
from lipbound.ops.tracing import converts, per_sample_shape, reduction_dims


class AdaptiveAvgPool(LinearOp):
    """F.adaptive_avg_pool1d/2d to ``output_size`` (windows from floor(i n / o) to
    ceil((i + 1) n / o), which may overlap when o does not divide n)."""

    kind = "adaptive_avg_pool"
    exact_sums = True

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        sizes = in_shapes[0][1:]
        taps = math.prod(math.ceil(n / o) + 1 for n, o in zip(sizes, params["output_size"]))
        return taps + 1  # the window's sum and the division

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        out = tuple(params["output_size"])
        if len(out) == 1:
            return F.adaptive_avg_pool1d(x, out)
        return F.adaptive_avg_pool2d(x, out)


class UpsampleNearest(LinearOp):
    """Nearest-neighbour upsampling (F.interpolate mode "nearest") to ``size``, or by
    ``scale_factor`` when the model gave one (the kernel then maps indices with it): copies."""

    kind = "upsample_nearest"
    exact_sums = True

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        sf = params.get("scale_factor")
        if sf is not None:
            return F.interpolate(x, scale_factor=tuple(sf), mode="nearest")
        return F.interpolate(x, size=tuple(params["size"]), mode="nearest")


class Flip(LinearOp):
    """Reverse the order along per-sample ``dims`` (its own transpose)."""

    kind = "flip"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return x.flip([d + 1 for d in params["dims"]])

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        return (self.apply_linear(params, A),)


for _op in (AdaptiveAvgPool(), UpsampleNearest(), Flip()):
    register(_op)


# -- ATen converters (lipbound.ops.tracing)

@converts("aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default")
def _adaptive_avg_pool2d(b, fx, x, output_size):
    h, w = x.shape[-2:]
    oh, ow = (v if v is not None else s for v, s in zip(output_size, (h, w)))
    if h % oh or w % ow:
        return b.add(fx, "adaptive_avg_pool", [x], {"output_size": (oh, ow)})
    k = (h // oh, w // ow)
    _avg_pool2d(b, fx, x, k, k)


@converts("aten.adaptive_avg_pool1d.default")
def _adaptive_avg_pool1d(b, fx, x, output_size):
    b.add(fx, "adaptive_avg_pool", [x], {"output_size": tuple(output_size)})


@converts("aten.upsample_nearest2d.vec", "aten.upsample_nearest1d.vec")
def _upsample_nearest(b, fx, x, output_size=None, scale_factors=None):
    size = per_sample_shape(fx)[1:]
    params = {"size": tuple(size), "scale_factor": None}
    if scale_factors is not None:
        params["scale_factor"] = tuple(float(v) for v in scale_factors)
    b.add(fx, "upsample_nearest", [x], params)


@converts("aten.upsample_nearest2d.default")
def _upsample_nearest2d(b, fx, x, output_size, scales_h=None, scales_w=None):
    sf = None if scales_h is None or scales_w is None else (scales_h, scales_w)
    _upsample_nearest(b, fx, x, output_size, sf)


@converts("aten.flip.default")
def _flip(b, fx, x, dims):
    b.add(fx, "flip", [x], {"dims": reduction_dims(fx, x, dims)})
