"""Affine operators with weights: Linear, Conv1d/2d, ConvTranspose2d, scale-shift, sums.

All are :class:`~lipbound.ops.base.LinearOp`: their IBP, CROWN and Jacobian rules derive from
the linear part, its absolute version and its transpose.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from lipbound.ops.base import LinearOp, Params
from lipbound.ops.registry import register


def _maybe_abs(w: Tensor, absolute: bool) -> Tensor:
    return w.abs() if absolute else w


class LinearLayer(LinearOp):
    """y = x W^T + b on the last dimension; params ``weight`` [out, in], ``bias`` [out] or None."""

    kind = "linear"
    exact_sums = True
    matmul_like = True

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        return params["weight"].shape[1] + 1

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return F.linear(x, _maybe_abs(params["weight"], absolute))

    def offset(self, params: Params) -> Tensor | None:
        return params.get("bias")

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        return (A @ params["weight"],)


class Conv(LinearOp):
    """N-d convolution (1-d or 2-d); params weight, bias, stride, padding, dilation, groups."""

    kind = "conv"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        w = params["weight"]
        return w.shape[0] * w[0, 0].numel()  # output channels x kernel taps reach a pixel
    matmul_like = True

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        return params["weight"][0].numel() + 1  # in_channels / groups * kernel taps, + bias

    def _conv(self, x: Tensor, w: Tensor, params: Params) -> Tensor:
        fn = F.conv1d if w.dim() == 3 else F.conv2d
        return fn(x, w, None, params["stride"], params["padding"], params["dilation"],
                  params["groups"])

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return self._conv(x, _maybe_abs(params["weight"], absolute), params)

    def offset(self, params: Params) -> Tensor | None:
        b = params.get("bias")
        if b is None:
            return None
        return b.reshape(-1, *([1] * (params["weight"].dim() - 2)))

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        w = params["weight"]
        nsp = w.dim() - 2
        in_sp = in_shapes[0][1:]
        out_sp = A.shape[2:]
        k = w.shape[2:]
        stride, pad, dil = (_tuple(params[n], nsp) for n in ("stride", "padding", "dilation"))
        out_pad = tuple(in_sp[i] - ((out_sp[i] - 1) * stride[i] - 2 * pad[i] + dil[i] * (k[i] - 1)
                                    + 1) for i in range(nsp))
        fn = F.conv_transpose1d if nsp == 1 else F.conv_transpose2d
        return (fn(A, w, None, stride, pad, out_pad, params["groups"], dil),)


class ConvTranspose(LinearOp):
    """2-d transposed convolution; params weight [in, out/groups, kh, kw], bias, stride,
    padding, output_padding, groups, dilation. Transpose by autodiff (generic vjp)."""

    kind = "conv_transpose"
    exact_sums = True
    matmul_like = True

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        w = params["weight"]  # [in, out / groups, *kernel]: in / groups channels, each tap
        return w.shape[0] // params["groups"] * w[0, 0].numel() + 1

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return F.conv_transpose2d(x, _maybe_abs(params["weight"], absolute), None,
                                  params["stride"], params["padding"], params["output_padding"],
                                  params["groups"], params["dilation"])

    def offset(self, params: Params) -> Tensor | None:
        b = params.get("bias")
        return None if b is None else b.reshape(-1, 1, 1)


class ScaleShift(LinearOp):
    """y = x * scale + shift, with per-sample tensors broadcastable to x (BatchNorm in eval,
    input normalisation (x - mean) / std, multiplication/division by constants)."""

    kind = "scale_shift"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        """A multiply and an add; BatchNorm states its own count (``rounded_ops``: the
        kernel's subtraction, rsqrt, products and sums)."""
        return int(params.get("rounded_ops", 2))

    def magnitude(self, params: Params, x: Tensor) -> Tensor:
        """|scale| |x| + the magnitude of the shift's parts (``shift_mag``: BatchNorm's
        |mean scale| + |beta|, which its kernel sums separately), else |shift|."""
        m = self.apply_linear(params, x, absolute=True)
        shift = params.get("shift_mag", params.get("shift"))
        return m if shift is None else m + shift.abs()

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return x * _maybe_abs(params["scale"], absolute)

    def offset(self, params: Params) -> Tensor | None:
        return params.get("shift")

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        return (A * params["scale"],)


class Sum(LinearOp):
    """y = sum_i coeffs[i] * x_i (residual additions, subtractions, gradient fan-in)."""

    kind = "add"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        coeffs = params["coeffs"]
        return len(coeffs) - 1 + sum(abs(c) != 1.0 for c in coeffs)

    def apply_linear(self, params: Params, *xs: Tensor, absolute: bool = False) -> Tensor:
        coeffs = params["coeffs"]
        out = 0
        for c, x in zip(coeffs, xs):
            out = out + (abs(c) if absolute else c) * x
        return out

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        return tuple(c * A for c in params["coeffs"])

    def apply_linear_one(self, params: Params, index: int, x: Tensor,
                         in_shapes: Sequence[tuple[int, ...]]) -> Tensor:
        return params["coeffs"][index] * x


def _tuple(v, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


for _op in (LinearLayer(), Conv(), ConvTranspose(), ScaleShift(), Sum()):
    register(_op)
