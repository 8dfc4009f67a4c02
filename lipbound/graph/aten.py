"""The ATen -> lipbound op table used by the tracer.

Each handler turns one exported ATen call whose value depends on the input into lipbound
nodes. Calls on constants only are evaluated right away. Activation spellings are
canonicalised here: ``relu``, ``clamp(min=0)``, ``clamp_min(0)`` and ``leaky_relu(0)`` all
become the op kind ``relu``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lipbound.errors import TracingError, UnsupportedOperationError
from lipbound.graph.ir import INPUT, Graph, Node, freeze


@dataclass(frozen=True)
class Var:
    """Reference to an input-dependent value (a lipbound node) during conversion."""

    name: str
    shape: tuple[int, ...]


def where_of(node: torch.fx.Node) -> str:
    """Human-readable location of an exported node in the user's model."""
    stack = node.meta.get("nn_module_stack") or {}
    parts = [f"node {node.name!r}"]
    if stack:
        path, cls = list(stack.values())[-1]
        cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
        parts.append(f"module {path.replace(chr(76) + chr(91), '')!r} ({cls_name.split('.')[-1]})")
    trace = node.meta.get("stack_trace")
    if trace:
        lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
        if len(lines) >= 2:
            parts.append(f"source {lines[-2]} :: {lines[-1]}")
    return ", ".join(parts)


class Builder:
    """Accumulates lipbound nodes while walking an exported graph."""

    def __init__(self, consts: dict[str, Tensor]) -> None:
        self.consts: dict[str, Any] = dict(consts)
        self.vars: dict[str, Any] = {}
        self.nodes: list[Node] = []
        self.input_name = ""
        self.output_name = ""

    # -- helpers used by handlers
    def resolve(self, a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            if a.name in self.vars:
                return self.vars[a.name]
            return self.consts[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(self.resolve(v) for v in a)
        return a

    def add(self, fx: torch.fx.Node, op: str, inputs: list[Var], params: dict | None = None,
            shape: tuple[int, ...] | None = None) -> Var:
        shape = per_sample_shape(fx) if shape is None else shape
        name = fx.name
        self.nodes.append(Node(name, op, tuple(v.name for v in inputs), shape, freeze(params),
                               where_of(fx)))
        var = Var(name, shape)
        self.vars[fx.name] = var
        return var

    def alias(self, fx: torch.fx.Node, var: Var) -> None:
        self.vars[fx.name] = var

    def add_input(self, fx: torch.fx.Node) -> None:
        self.input_name = fx.name
        self.add(fx, INPUT, [])

    def set_output(self, fx: torch.fx.Node) -> None:
        v = self.vars.get(fx.name)
        if not isinstance(v, Var):
            raise TracingError("the model's output does not depend on its input")
        self.output_name = v.name

    def build(self) -> Graph:
        return Graph(tuple(self.nodes), self.input_name, self.output_name)


def per_sample_shape(fx: torch.fx.Node) -> tuple[int, ...]:
    val = fx.meta.get("val")
    if not isinstance(val, Tensor) or val.dim() == 0 or val.shape[0] != 2:
        shape = list(val.shape) if isinstance(val, Tensor) else type(val).__name__
        raise UnsupportedOperationError(
            str(fx.target), where_of(fx), SUPPORTED,
            hint=f"Its result {shape} does not keep the batch dimension first; lipbound needs "
                 "models that treat batch entries independently.",
        )
    return tuple(int(s) for s in val.shape[1:])


def convert_node(b: Builder, fx: torch.fx.Node) -> None:
    """Convert one exported call: fold it if constant, else dispatch to its handler."""
    args, kwargs = b.resolve(fx.args), b.resolve(fx.kwargs)
    flat = list(args) + list(kwargs.values())
    flat = [v for a in flat for v in (a if isinstance(a, (list, tuple)) else [a])]
    if not any(isinstance(a, Var) for a in flat):
        b.consts[fx.name] = fx.target(*args, **kwargs)
        return
    if fx.target is operator.getitem:
        src, idx = args
        if isinstance(src, tuple):
            b.alias(fx, src[idx])
            return
    handler = HANDLERS.get(str(fx.target))
    if handler is None:
        raise UnsupportedOperationError(
            str(fx.target), where_of(fx), SUPPORTED,
            hint="Rewrite the model with supported operators or open an issue.")
    # constants made in forward (torch.ones, torch.eye, ...) come in the model's dtype; the
    # graph's parameters are float64 (exact widening), so that rewrites round in float64
    handler(b, fx, *_float64(args), **_float64(kwargs))


def _float64(a: Any) -> Any:
    """Floating constant tensors in ``a`` (nested lists/tuples/dicts) widened to float64."""
    if isinstance(a, Tensor):
        return a.double() if a.is_floating_point() else a
    if isinstance(a, (list, tuple)):
        return type(a)(_float64(v) for v in a)
    if isinstance(a, dict):
        return {k: _float64(v) for k, v in a.items()}
    return a


def _unsupported(fx: torch.fx.Node, why: str) -> UnsupportedOperationError:
    return UnsupportedOperationError(str(fx.target), where_of(fx), SUPPORTED, hint=why)


def _as_per_sample(c: Any, fx: torch.fx.Node, ndim: int) -> Any:
    """A constant operand as a per-sample broadcastable tensor (drop a leading batch dim 1)."""
    if not isinstance(c, Tensor):
        return torch.tensor(float(c), dtype=torch.float64)
    if c.dim() > ndim:
        if c.dim() != ndim + 1 or c.shape[0] != 1:
            raise _unsupported(fx, "a constant operand varies along the batch dimension")
        c = c[0]
    return c.detach()


# ------------------------------------------------------------------------ affine handlers
def _linear(b, fx, x, w, bias=None):
    if isinstance(w, Var) or isinstance(bias, Var):
        raise _unsupported(fx, "the weights depend on the input")
    b.add(fx, "linear", [x], {"weight": w, "bias": bias})


def _addmm(b, fx, bias, x, wt, beta=1, alpha=1):
    if not isinstance(x, Var) or isinstance(wt, Var) or isinstance(bias, Var):
        raise _unsupported(fx, "only input @ constant matrices are supported")
    b.add(fx, "linear", [x], {"weight": alpha * wt.t(), "bias": beta * bias})


def _matmul(b, fx, x, w):
    if not isinstance(x, Var) or isinstance(w, Var) or w.dim() != 2 or len(x.shape) != 1:
        raise _unsupported(fx, "only [B, n] @ constant [n, m] products are supported")
    b.add(fx, "linear", [x], {"weight": w.t(), "bias": None})


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


def _binary(kind: str) -> Callable:
    def handler(b, fx, x, y, alpha=1):
        if isinstance(x, Var) and isinstance(y, Var):
            if kind in ("add", "sub"):
                sign = alpha if kind == "add" else -alpha
                return b.add(fx, "add", [x, y], {"coeffs": (1.0, float(sign))})
            raise _unsupported(fx, f"{kind} of two input-dependent tensors is not supported "
                                   "(only by constants)")
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
        if not isinstance(x, Var):
            raise _unsupported(fx, "division by an input-dependent tensor is not supported")
        return b.add(fx, "scale_shift", [var], {"scale": 1.0 / c, "shift": None})

    return handler


def _one(c: Tensor) -> Tensor:
    return torch.ones((), dtype=c.dtype)


# ------------------------------------------------------------------------ activations
def _relu(b, fx, x):
    b.add(fx, "relu", [x])


def _clamp(b, fx, x, min=None, max=None):
    if max is None and min is not None and float(min) == 0.0:
        return b.add(fx, "relu", [x])
    raise _unsupported(fx, "clamp is only supported as clamp(min=0) (a ReLU)")


def _clamp_min(b, fx, x, min):
    if float(min) == 0.0:
        return b.add(fx, "relu", [x])
    raise _unsupported(fx, "clamp_min is only supported with 0 (a ReLU)")


def _leaky_relu(b, fx, x, negative_slope=0.01):
    k = float(negative_slope)
    if k == 0.0:
        return b.add(fx, "relu", [x])
    if not 0.0 < k <= 1.0:
        raise _unsupported(fx, f"leaky_relu needs a negative slope in [0, 1], got {k}")
    b.add(fx, "leaky_relu", [x], {"negative_slope": k})


def _unary(kind: str) -> Callable:
    def handler(b, fx, x):
        b.add(fx, kind, [x])

    return handler


def _gelu(b, fx, x, approximate="none"):
    if approximate != "none":
        raise _unsupported(fx, "only the exact (erf) GELU is supported, not approximate='tanh'")
    b.add(fx, "gelu", [x])


def _softplus(b, fx, x, beta=1, threshold=20):
    if float(beta) != 1.0:
        raise _unsupported(fx, "softplus is supported with beta=1 only")
    b.add(fx, "softplus", [x])


def _elu(b, fx, x, alpha=1.0, scale=1, input_scale=1):
    if float(alpha) != 1.0 or float(scale) != 1.0 or float(input_scale) != 1.0:
        raise _unsupported(fx, "ELU is supported with alpha=1 (and no scaling) only")
    b.add(fx, "elu", [x])


# ------------------------------------------------------------------------ shapes and pooling
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
    if not all(isinstance(v, Var) for v in xs):
        raise _unsupported(fx, "concatenation with constant tensors is not supported")
    b.add(fx, "concat", list(xs), {"dim": dim - 1})


def _slice(b, fx, x, dim=0, start=None, end=None, step=1):
    nd = len(x.shape) + 1
    dim = dim % nd
    if dim == 0:
        if (start in (None, 0)) and (end is None or end >= 2) and step == 1:
            return b.alias(fx, x)
        raise _unsupported(fx, "slicing the batch dimension is not supported")
    b.add(fx, "slice", [x], {"dim": dim - 1, "start": start, "end": end, "step": step})


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
    oh, ow = output_size
    if h % oh or w % ow:
        raise _unsupported(fx, "adaptive average pooling needs sizes that divide evenly")
    k = (h // oh, w // ow)
    _avg_pool2d(b, fx, x, k, k)


def _mean(b, fx, x, dims, keepdim=False, dtype=None):
    nd = len(x.shape) + 1
    dims = sorted(d % nd for d in dims)
    if len(x.shape) != 3 or dims != [2, 3]:
        raise _unsupported(fx, "mean is supported only over the two spatial dims of [B,C,H,W]")
    pooled = b.add(fx, "avg_pool", [x], {"kernel_size": tuple(x.shape[1:]), "stride":
                                         tuple(x.shape[1:]), "padding": 0, "ceil_mode": False,
                                         "count_include_pad": True, "divisor_override": None,
                                         "ndim": 2}, shape=(x.shape[0], 1, 1))
    if not keepdim:
        b.nodes.append(Node(fx.name + "_squeeze", "reshape", (pooled.name,), (x.shape[0],),
                            freeze({"shape": (x.shape[0],)}), where_of(fx)))
        b.vars[fx.name] = Var(fx.name + "_squeeze", (x.shape[0],))


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


HANDLERS: dict[str, Callable] = {
    "aten.linear.default": _linear,
    "aten.addmm.default": _addmm,
    "aten.mm.default": _matmul,
    "aten.matmul.default": _matmul,
    "aten.conv1d.default": _convnd,
    "aten.conv2d.default": _convnd,
    "aten.convolution.default": _convolution,
    "aten.conv_transpose2d.input": _conv_transpose,
    "aten.batch_norm.default": _batch_norm,
    "aten._native_batch_norm_legit_no_training.default": _bn_no_training,
    "aten.add.Tensor": _binary("add"),
    "aten.sub.Tensor": _binary("sub"),
    "aten.mul.Tensor": _binary("mul"),
    "aten.div.Tensor": _binary("div"),
    "aten.relu.default": _relu,
    "aten.relu_.default": _relu,
    "aten.clamp.default": _clamp,
    "aten.clamp_min.default": _clamp_min,
    "aten.leaky_relu.default": _leaky_relu,
    "aten.sigmoid.default": _unary("sigmoid"),
    "aten.tanh.default": _unary("tanh"),
    "aten.silu.default": _unary("silu"),
    "aten.gelu.default": _gelu,
    "aten.softplus.default": _softplus,
    "aten.elu.default": _elu,
    "aten.view.default": _reshape,
    "aten.reshape.default": _reshape,
    "aten._unsafe_view.default": _reshape,
    "aten.flatten.using_ints": _reshape,
    "aten.unsqueeze.default": _reshape,
    "aten.squeeze.dim": _reshape,
    "aten.squeeze.dims": _reshape,
    "aten.contiguous.default": _identity,
    "aten.clone.default": _identity,
    "aten.alias.default": _identity,
    "aten.detach.default": _identity,
    "aten.dropout.default": _dropout,
    "aten.permute.default": _permute,
    "aten.transpose.int": _transpose,
    "aten.cat.default": _cat,
    "aten.slice.Tensor": _slice,
    "aten.pad.default": _pad,
    "aten.constant_pad_nd.default": _constant_pad,
    "aten.avg_pool2d.default": _avg_pool2d,
    "aten.avg_pool1d.default": _avg_pool1d,
    "aten.adaptive_avg_pool2d.default": _adaptive_avg_pool2d,
    "aten.mean.dim": _mean,
    "aten.max_pool2d.default": _max_pool2d,
    "aten.max_pool2d_with_indices.default": _max_pool2d_with_indices,
}

SUPPORTED = sorted(HANDLERS)
