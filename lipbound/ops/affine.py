"""Affine operators with weights: Linear, Conv1d/2d, ConvTranspose2d, scale-shift, sums.

All are :class:`~lipbound.ops.base.LinearOp`: their IBP, CROWN and Jacobian rules derive from
the linear part, its absolute version and its transpose.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lipbound.ops.base import LinearOp, Params
from lipbound.ops.facts import COEFFS, COLUMNS, SLIDING, NormFact, WindowMap
from lipbound.ops.registry import register
from lipbound.ops.tracing import (
    Var,
    as_per_sample,
    broadcast,
    converts,
    one,
    per_sample_shape,
    unsupported,
)


def _maybe_abs(w: Tensor, absolute: bool) -> Tensor:
    return w.abs() if absolute else w


def _has_bias(params: Params) -> int:
    """1 when the layer adds a bias: one more term in each output's sum (a sum of n products
    without one rounds at most n times, Higham Thm 3.5)."""
    return int(params.get("bias") is not None)


class LinearLayer(LinearOp):
    """y = x W^T + b on the last dimension; params ``weight`` [out, in], ``bias`` [out] or None,
    optional ``extra_ops``: further roundings of the model's own computation that the node
    stands for (an RNN's gates sum two products and two biases: 2)."""

    kind = "linear"
    exact_sums = True
    matmul_like = True

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        return params["weight"].shape[1] + _has_bias(params) + int(params.get("extra_ops", 0))

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return F.linear(x, _maybe_abs(params["weight"], absolute))

    def offset(self, params: Params) -> Tensor | None:
        return params.get("bias")

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        return (A @ params["weight"],)

    def norm_fact(self, params: Params, index: int) -> NormFact:
        return NormFact(matrix=params["weight"])

    def window_map(self, params: Params, forward: bool = False) -> WindowMap | None:
        """Forward (a transpose node's step): ``a W^T`` reads only the columns of W that
        column-sparse coefficients select."""
        return WindowMap(COLUMNS, weight=params["weight"]) if forward else None

    #: merges with a Linear before it run after the scale-shift folds
    fold_stage = 1

    def fold_after(self, params: Params, shape: tuple[int, ...], first: Any,
                   first_params: Params, first_shape: tuple[int, ...]
                   ) -> tuple[str, dict[str, Any]] | None:
        """Linear after Linear as one Linear when the product W2 W1 has no more entries
        than the two factors together; else None."""
        if not isinstance(first, LinearLayer):
            return None
        w1, w2 = first_params["weight"], params["weight"]
        if w2.shape[0] * w1.shape[1] > w1.numel() + w2.numel():
            return None
        return self.kind, {"weight": w2 @ w1, "bias": _bias(params) + w2 @ _bias(first_params)}

    def scale_output(self, params: Params, out_shape: tuple[int, ...], scale: Tensor,
                     shift: Tensor | None) -> dict[str, Any] | None:
        """Params of ``scale * self(x) + shift`` (per output feature) on vector outputs."""
        if len(out_shape) != 1:
            return None  # per-feature scaling of a linear layer applied to a non-vector input
        return _scaled_rows(params, scale, shift)

    def absorb_input_scale(self, params: Params, scale: Tensor, shift: Tensor | None
                           ) -> dict[str, Any] | None:
        """Params of ``self(scale * x + shift)`` for a flat input (scale, shift [in])."""
        w = params["weight"]
        if scale.numel() != w.shape[1]:
            return None
        new_b = _bias(params)
        if shift is not None:
            new_b = new_b + w @ shift.to(w.dtype)
        return {"weight": w * scale.to(w.dtype), "bias": new_b}

    def flat_affine(self, params: Params, n_in: int, out_shape: tuple[int, ...]
                    ) -> tuple[Tensor, Tensor]:
        w = params["weight"].detach().double()
        b = params.get("bias")
        return w, (torch.zeros(w.shape[0], dtype=torch.float64) if b is None
                   else b.detach().double().reshape(-1))


class Conv(LinearOp):
    """N-d convolution (1-, 2- or 3-d); params weight, bias, stride, padding, dilation,
    groups."""

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
        fn = (F.conv1d, F.conv2d, F.conv3d)[w.dim() - 3]
        return fn(x, w, None, params["stride"], params["padding"], params["dilation"],
                  params["groups"])

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return self._conv(x, _maybe_abs(params["weight"], absolute), params)

    def window_map(self, params: Params, forward: bool = False) -> WindowMap | None:
        """2-d convolutions with integer padding: the convolution without padding (forward)
        or its transpose, on the window's extent."""
        w = params["weight"]
        if w.dim() != 4 or isinstance(params["padding"], str):
            return None
        s, p, d = (_tuple(params[n], 2) for n in ("stride", "padding", "dilation"))
        geom = tuple((w.shape[2 + i], s[i], p[i], d[i]) for i in range(2))
        st, dil, groups = params["stride"], params["dilation"], params["groups"]
        if forward:
            return WindowMap(SLIDING, geometry=geom, forward=True,
                             kernel=lambda x: F.conv2d(x, w, None, st, 0, dil, groups))
        return WindowMap(SLIDING, geometry=geom, kernel=lambda a: F.conv_transpose2d(
            a, w, None, st, 0, 0, groups, dil))

    def scale_output(self, params: Params, out_shape: tuple[int, ...], scale: Tensor,
                     shift: Tensor | None) -> dict[str, Any]:
        """Params of ``scale * self(x) + shift`` (per output channel)."""
        return _scaled_rows(params, scale, shift)

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
        fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nsp - 1]
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

    def window_map(self, params: Params, forward: bool = False) -> WindowMap:
        """Input i's coefficients are c_i times the output's (either direction)."""
        return WindowMap(COEFFS, coeffs=tuple(params["coeffs"]))

    def norm_fact(self, params: Params, index: int) -> NormFact:
        """Input i's map is c_i times the identity: |c_i| in every norm."""
        return NormFact(every_p=abs(float(params["coeffs"][index])))

    def apply_linear_one(self, params: Params, index: int, x: Tensor,
                         in_shapes: Sequence[tuple[int, ...]]) -> Tensor:
        return params["coeffs"][index] * x


def _bias(params: Params) -> Tensor:
    b = params.get("bias")
    w = params["weight"]
    return torch.zeros(w.shape[0], dtype=w.dtype) if b is None else b


def _scaled_rows(params: Params, scale: Tensor, shift: Tensor | None) -> dict[str, Any]:
    """The op's params with output channel i of weight and bias times scale[i], plus
    shift[i] on the bias."""
    w = params["weight"]
    s_vec = scale.to(w.dtype)
    new_w = w * s_vec.reshape(-1, *([1] * (w.dim() - 1)))
    new_b = _bias(params) * s_vec + (0 if shift is None else shift.to(w.dtype))
    return {**params, "weight": new_w, "bias": new_b}


def _tuple(v, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


for _op in (LinearLayer(), Conv(), ConvTranspose(), Sum()):
    register(_op)


# -- ATen converters (lipbound.ops.tracing)

@converts("aten.linear.default")
def _linear(b, fx, x, w, bias=None):
    if isinstance(w, Var) or isinstance(bias, Var):
        raise unsupported(fx, "the weights depend on the input")
    b.add(fx, "linear", [x], {"weight": w, "bias": bias})


@converts("aten.addmm.default")
def _addmm(b, fx, bias, x, wt, beta=1, alpha=1):
    if not isinstance(x, Var) or isinstance(wt, Var) or isinstance(bias, Var):
        raise unsupported(fx, "only input @ constant matrices are supported")
    b.add(fx, "linear", [x], {"weight": alpha * wt.t(), "bias": beta * bias})


@converts("aten.mm.default", "aten.matmul.default", "aten.bmm.default")
def _matmul(b, fx, x, w):
    if isinstance(x, Var) and isinstance(w, Var):
        return _matmul_vars(b, fx, x, w)
    if isinstance(x, Var) and w.dim() == 2 and len(x.shape) >= 1:
        return b.add(fx, "linear", [x], {"weight": w.t(), "bias": None})
    if isinstance(w, Var) and x.dim() == 2 and len(w.shape) >= 2:
        # c @ y = (y^T c^T)^T: a Linear on the transposed last two dims
        nd = len(w.shape)
        swap = tuple(range(nd - 2)) + (nd - 1, nd - 2)
        yt = b.aux(fx, "t", "permute", [w], tuple(w.shape[i] for i in swap), {"dims": swap})
        lin = b.aux(fx, "lin", "linear", [yt], yt.shape[:-1] + (x.shape[0],),
                    {"weight": x, "bias": None})
        return b.add(fx, "permute", [lin], {"dims": swap})
    raise unsupported(fx, "only products input @ constant matrix, constant matrix @ input "
                          "and input @ input are supported")


def _matmul_vars(b, fx, x: Var, y: Var, tag: str | None = None) -> Var:
    """x [*, n, k] @ y [*, k, m] of two input-dependent tensors: the products x_ik y_kj as
    one ``mul`` of broadcast copies [*, n, k, m], summed over k (McCormick per product).
    With ``tag`` the result is a helper node, else the node of ``fx``."""
    if len(x.shape) < 2 or len(y.shape) < 2:
        raise unsupported(fx, "products of two input-dependent tensors need matrices "
                              "(per sample at least 2-d) on both sides")
    n, k = x.shape[-2:]
    m = y.shape[-1]
    batch = tuple(torch.broadcast_shapes(x.shape[:-2], y.shape[:-2]))
    full = batch + (n, k, m)
    t = tag or "mm"
    x4 = b.aux(fx, t + "_x4", "reshape", [x], x.shape + (1,), {"shape": x.shape + (1,)})
    y4 = b.aux(fx, t + "_y4", "reshape", [y], y.shape[:-2] + (1,) + y.shape[-2:],
               {"shape": y.shape[:-2] + (1,) + y.shape[-2:]})
    x4 = broadcast(b, fx, x4, full, t + "_xb")
    y4 = broadcast(b, fx, y4, full, t + "_yb")
    prod = b.aux(fx, t + "_prod", "mul", [x4, y4], full)
    params = {"dims": (len(full) - 2,), "keepdim": False, "scale": 1.0, "matmul": True}
    if tag:
        return b.aux(fx, tag, "sum", [prod], batch + (n, m), params)
    return b.add(fx, "sum", [prod], params)


def _conv_params(stride, padding, dilation, groups):
    return {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}


@converts("aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default")
def _convnd(b, fx, x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str):
        raise unsupported(fx, "string padding ('same'/'valid') is not supported; use integers")
    b.add(fx, "conv", [x], {"weight": w, "bias": bias, **_conv_params(stride, padding,
                                                                       dilation, groups)})


@converts("aten.conv_transpose2d.input")
def _conv_transpose(b, fx, x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                    dilation=1):
    if w.dim() != 4:
        raise unsupported(fx, "only 2-d transposed convolutions are supported")
    b.add(fx, "conv_transpose", [x], {"weight": w, "bias": bias, "stride": stride,
                                      "padding": padding, "output_padding": output_padding,
                                      "groups": groups, "dilation": dilation})


@converts("aten.convolution.default")
def _convolution(b, fx, x, w, bias, stride, padding, dilation, transposed, output_padding,
                 groups):
    if transposed:
        return _conv_transpose(b, fx, x, w, bias, stride, padding, output_padding, groups,
                               dilation)
    return _convnd(b, fx, x, w, bias, stride, padding, dilation, groups)


def _binary(kind: str) -> Callable:
    def handler(b, fx, x, y, alpha=1):
        if isinstance(x, Var) and isinstance(y, Var):
            return _binary_vars(b, fx, kind, x, y, alpha)
        var, c = (x, y) if isinstance(x, Var) else (y, x)
        nd = len(fx.meta["val"].shape) - 1
        if per_sample_shape(fx) != var.shape:  # the constant broadcasts the input: copies
            var = broadcast(b, fx, var, per_sample_shape(fx), "bc")
        c = as_per_sample(c, fx, nd)
        if kind == "add":
            return b.add(fx, "scale_shift", [var], {"scale": one(c), "shift": c * alpha})
        if kind == "sub":
            if isinstance(x, Var):
                return b.add(fx, "scale_shift", [var], {"scale": one(c), "shift": -c * alpha})
            return b.add(fx, "scale_shift", [var], {"scale": -alpha * one(c), "shift": c})
        if kind == "mul":
            return b.add(fx, "scale_shift", [var], {"scale": c, "shift": None})
        if not isinstance(x, Var):  # c / y = c * y^-1
            r = b.aux(fx, "recip", "pow", [var], var.shape, {"exponent": -1.0, "coeff": 1.0})
            return b.add(fx, "scale_shift", [r], {"scale": c, "shift": None})
        return b.add(fx, "scale_shift", [var], {"scale": 1.0 / c, "shift": None})

    return handler


def _binary_vars(b, fx, kind: str, x: Var, y: Var, alpha=1):
    """add / sub / mul / div of two input-dependent tensors (broadcast explicitly)."""
    shape = per_sample_shape(fx)
    if kind in ("add", "sub"):
        sign = alpha if kind == "add" else -alpha
        xs, ys = broadcast(b, fx, x, shape, "xb"), broadcast(b, fx, y, shape, "yb")
        return b.add(fx, "add", [xs, ys], {"coeffs": (1.0, float(sign))})
    if kind == "mul" and x.name == y.name:
        return b.add(fx, "square", [x])
    if kind == "div":
        y = b.aux(fx, "recip", "pow", [y], y.shape, {"exponent": -1.0, "coeff": 1.0})
    xs, ys = broadcast(b, fx, x, shape, "xb"), broadcast(b, fx, y, shape, "yb")
    return b.add(fx, "mul", [xs, ys])


for _kind in ("add", "sub", "mul", "div"):
    converts(f"aten.{_kind}.Tensor")(_binary(_kind))
