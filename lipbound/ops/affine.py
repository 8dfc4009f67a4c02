"""Affine operators with weights: Linear, Conv1d/2d, ConvTranspose2d, scale-shift, sums.

All are :class:`~lipbound.ops.base.LinearOp`: their IBP, CROWN and Jacobian rules derive from
the linear part, its absolute version and its transpose.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lipbound.ops.base import LinearOp, Params
from lipbound.ops.facts import NormFact
from lipbound.ops.registry import register


def _maybe_abs(w: Tensor, absolute: bool) -> Tensor:
    return w.abs() if absolute else w


def _has_bias(params: Params) -> int:
    """1 when the layer adds a bias: one more term in each output's sum (a sum of n products
    without one rounds at most n times, Higham Thm 3.5)."""
    return int(params.get("bias") is not None)


class LinearLayer(LinearOp):
    """y = x W^T + b on the last dimension; params ``weight`` [out, in], ``bias`` [out] or None."""

    kind = "linear"
    exact_sums = True
    matmul_like = True

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        return params["weight"].shape[1] + _has_bias(params)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return F.linear(x, _maybe_abs(params["weight"], absolute))

    def offset(self, params: Params) -> Tensor | None:
        return params.get("bias")

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        return (A @ params["weight"],)

    def norm_fact(self, params: Params, index: int) -> NormFact:
        return NormFact(matrix=params["weight"])

    def flat_affine(self, params: Params, n_in: int, out_shape: tuple[int, ...]
                    ) -> tuple[Tensor, Tensor]:
        w = params["weight"].detach().double()
        b = params.get("bias")
        return w, (torch.zeros(w.shape[0], dtype=torch.float64) if b is None
                   else b.detach().double().reshape(-1))


class Conv(LinearOp):
    """N-d convolution (1-d or 2-d); params weight, bias, stride, padding, dilation, groups."""

    kind = "conv"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        w = params["weight"]
        return w.shape[0] * w[0, 0].numel()  # output channels x kernel taps reach a pixel
    matmul_like = True

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        # in_channels / groups * kernel taps, + the bias
        return params["weight"][0].numel() + _has_bias(params)

    def _conv(self, x: Tensor, w: Tensor, params: Params) -> Tensor:
        fn = F.conv1d if w.dim() == 3 else F.conv2d
        return fn(x, w, None, params["stride"], params["padding"], params["dilation"],
                  params["groups"])

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return self._conv(x, _maybe_abs(params["weight"], absolute), params)

    def norm_fact(self, params: Params, index: int) -> NormFact:
        w = params["weight"]
        nsp = w.dim() - 2
        return NormFact(conv=(w, int(params["groups"]), _tuple(params["stride"], nsp),
                              _tuple(params["dilation"], nsp)))

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
        return w.shape[0] // params["groups"] * w[0, 0].numel() + _has_bias(params)

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

    def flat_affine(self, params: Params, n_in: int, out_shape: tuple[int, ...]
                    ) -> tuple[Tensor, Tensor] | None:
        """diag(scale) x + shift on 1-D inputs."""
        if len(out_shape) != 1:
            return None
        scale = params["scale"].detach().double().reshape(-1).expand(n_in)
        shift = params.get("shift")
        b = (torch.zeros(n_in, dtype=torch.float64) if shift is None
             else shift.detach().double().reshape(-1).expand(n_in).clone())
        return torch.diag(scale), b

    def norm_fact(self, params: Params, index: int) -> NormFact:
        """A diagonal map: max |scale| in every norm."""
        return NormFact(every_p=float(params["scale"].double().abs().max()))


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

    def norm_fact(self, params: Params, index: int) -> NormFact:
        """Input i's map is c_i times the identity: |c_i| in every norm."""
        return NormFact(every_p=abs(float(params["coeffs"][index])))

    def apply_linear_one(self, params: Params, index: int, x: Tensor,
                         in_shapes: Sequence[tuple[int, ...]]) -> Tensor:
        return params["coeffs"][index] * x


def _tuple(v, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


for _op in (LinearLayer(), Conv(), ConvTranspose(), ScaleShift(), Sum()):
    register(_op)
