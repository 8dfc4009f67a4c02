"""ATen handlers of affine ops: linear layers and matrix products (of two input-dependent
tensors too), convolutions, batch norm, and add / sub / mul / div / neg / rsub with constants
or between input-dependent tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lipbound.graph.aten_builder import (
    Var,
    _as_per_sample,
    _broadcast,
    _one,
    _unsupported,
    per_sample_shape,
)


def _linear(b, fx, x, w, bias=None):
    if isinstance(w, Var) or isinstance(bias, Var):
        raise _unsupported(fx, "the weights depend on the input")
    b.add(fx, "linear", [x], {"weight": w, "bias": bias})


def _addmm(b, fx, bias, x, wt, beta=1, alpha=1):
    if not isinstance(x, Var) or isinstance(wt, Var) or isinstance(bias, Var):
        raise _unsupported(fx, "only input @ constant matrices are supported")
    b.add(fx, "linear", [x], {"weight": alpha * wt.t(), "bias": beta * bias})


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
    raise _unsupported(fx, "only products input @ constant matrix, constant matrix @ input "
                           "and input @ input are supported")


def _matmul_vars(b, fx, x: Var, y: Var, tag: str | None = None) -> Var:
    """x [*, n, k] @ y [*, k, m] of two input-dependent tensors: the products x_ik y_kj as
    one ``mul`` of broadcast copies [*, n, k, m], summed over k (McCormick per product).
    With ``tag`` the result is a helper node, else the node of ``fx``."""
    if len(x.shape) < 2 or len(y.shape) < 2:
        raise _unsupported(fx, "products of two input-dependent tensors need matrices "
                               "(per sample at least 2-d) on both sides")
    n, k = x.shape[-2:]
    m = y.shape[-1]
    batch = tuple(torch.broadcast_shapes(x.shape[:-2], y.shape[:-2]))
    full = batch + (n, k, m)
    t = tag or "mm"
    x4 = b.aux(fx, t + "_x4", "reshape", [x], x.shape + (1,), {"shape": x.shape + (1,)})
    y4 = b.aux(fx, t + "_y4", "reshape", [y], y.shape[:-2] + (1,) + y.shape[-2:],
               {"shape": y.shape[:-2] + (1,) + y.shape[-2:]})
    x4 = _broadcast(b, fx, x4, full, t + "_xb")
    y4 = _broadcast(b, fx, y4, full, t + "_yb")
    prod = b.aux(fx, t + "_prod", "mul", [x4, y4], full)
    params = {"dims": (len(full) - 2,), "keepdim": False, "scale": 1.0, "matmul": True}
    if tag:
        return b.aux(fx, tag, "sum", [prod], batch + (n, m), params)
    return b.add(fx, "sum", [prod], params)


def _conv_params(stride, padding, dilation, groups):
    return {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}


def _convnd(b, fx, x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str):
        raise _unsupported(fx, "string padding ('same'/'valid') is not supported; use integers")
    b.add(fx, "conv", [x], {"weight": w, "bias": bias, **_conv_params(stride, padding,
                                                                       dilation, groups)})


def _conv_transpose(b, fx, x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                    dilation=1):
    if w.dim() != 4:
        raise _unsupported(fx, "only 2-d transposed convolutions are supported")
    b.add(fx, "conv_transpose", [x], {"weight": w, "bias": bias, "stride": stride,
                                      "padding": padding, "output_padding": output_padding,
                                      "groups": groups, "dilation": dilation})


def _convolution(b, fx, x, w, bias, stride, padding, dilation, transposed, output_padding,
                 groups):
    if transposed:
        return _conv_transpose(b, fx, x, w, bias, stride, padding, output_padding, groups,
                               dilation)
    return _convnd(b, fx, x, w, bias, stride, padding, dilation, groups)


def _batch_norm_params(fx, x, w, bias, mean, var, eps):
    if any(isinstance(t, Var) for t in (w, bias, mean, var)):
        raise _unsupported(fx, "batch-norm statistics depend on the input")
    var, mean = var.double(), mean.double()  # exact: the stored float32 values, in float64
    scale = 1.0 / torch.sqrt(var + eps)
    if w is not None:
        scale = scale * w.double()
    beta = torch.zeros_like(mean) if bias is None else bias.double()
    shift = -mean * scale + beta
    extra = len(x.shape) - 1
    shape = (-1,) + (1,) * extra
    # the kernel's own rounding: rsqrt(var + eps), the products and the sums (8 operations)
    # on |x scale| + |mean scale| + |beta| (float error rule of scale_shift)
    shift_mag = (mean * scale).abs() + beta.abs()
    return {"scale": scale.reshape(shape), "shift": shift.reshape(shape),
            "shift_mag": shift_mag.reshape(shape), "rounded_ops": 8}


def _batch_norm(b, fx, x, w, bias, mean, var, training=False, momentum=0.1, eps=1e-5,
                cudnn=False):
    if training:
        raise _unsupported(fx, "batch norm in training mode; call model.eval()")
    b.add(fx, "scale_shift", [x], _batch_norm_params(fx, x, w, bias, mean, var, eps))


def _bn_no_training(b, fx, x, w, bias, mean, var, momentum, eps):
    var_ = b.add(fx, "scale_shift", [x], _batch_norm_params(fx, x, w, bias, mean, var, eps),
                 shape=x.shape)
    b.vars[fx.name] = (var_, None, None)


def _native_batch_norm(b, fx, x, w, bias, mean, var, training, momentum, eps):
    """``aten.native_batch_norm``, what ``F.batch_norm`` runs below autograd (recorded
    forward passes): in eval mode the same scale-shift as the exported form."""
    if training:
        raise _unsupported(fx, "batch norm in training mode; call model.eval()")
    _bn_no_training(b, fx, x, w, bias, mean, var, momentum, eps)


def _binary(kind: str) -> Callable:
    def handler(b, fx, x, y, alpha=1):
        if isinstance(x, Var) and isinstance(y, Var):
            return _binary_vars(b, fx, kind, x, y, alpha)
        var, c = (x, y) if isinstance(x, Var) else (y, x)
        nd = len(fx.meta["val"].shape) - 1
        if per_sample_shape(fx) != var.shape:
            raise _unsupported(fx, f"a constant operand that broadcasts the input from "
                                   f"{list(var.shape)} to {list(per_sample_shape(fx))} is not "
                                   "supported (a scale-shift keeps the shape of its input)")
        c = _as_per_sample(c, fx, nd)
        if kind == "add":
            return b.add(fx, "scale_shift", [var], {"scale": _one(c), "shift": c * alpha})
        if kind == "sub":
            if isinstance(x, Var):
                return b.add(fx, "scale_shift", [var], {"scale": _one(c), "shift": -c * alpha})
            return b.add(fx, "scale_shift", [var], {"scale": -alpha * _one(c), "shift": c})
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
        xs, ys = _broadcast(b, fx, x, shape, "xb"), _broadcast(b, fx, y, shape, "yb")
        return b.add(fx, "add", [xs, ys], {"coeffs": (1.0, float(sign))})
    if kind == "mul" and x.name == y.name:
        return b.add(fx, "square", [x])
    if kind == "div":
        y = b.aux(fx, "recip", "pow", [y], y.shape, {"exponent": -1.0, "coeff": 1.0})
    xs, ys = _broadcast(b, fx, x, shape, "xb"), _broadcast(b, fx, y, shape, "yb")
    return b.add(fx, "mul", [xs, ys])


def _neg(b, fx, x):
    b.add(fx, "scale_shift", [x], {"scale": torch.tensor(-1.0, dtype=torch.float64),
                                   "shift": None})


def _rsub(b, fx, x, other, alpha=1):
    """other - alpha * x for a constant ``other``."""
    if not isinstance(x, Var) or isinstance(other, Var):
        raise _unsupported(fx, "rsub needs an input-dependent tensor and a constant")
    c = _as_per_sample(other, fx, len(per_sample_shape(fx)))
    b.add(fx, "scale_shift", [x], {"scale": -float(alpha) * _one(c), "shift": c})
