"""The ATen -> lipbound op table used by the tracer.

Each handler turns one exported ATen call whose value depends on the input into lipbound
nodes. Calls on constants only are evaluated right away. Activation spellings are
canonicalised here: ``relu``, ``clamp(min=0)``, ``clamp_min(0)`` and ``leaky_relu(0)`` all
become the op kind ``relu``; ``hardtanh``, ``relu6`` and ``clamp`` with both limits become one
piecewise-linear ``pwl`` node, a clamp with one limit a shifted ReLU; ``sqrt``, ``rsqrt``,
``reciprocal`` and ``pow`` with a constant exponent become ``pow`` (``x ** 2`` and ``x * x``:
``square``); ``neg`` is a ``scale_shift``; min is ``-max(-x)``; products and quotients of two
input-dependent tensors become ``mul`` (with ``pow(-1)`` for a divisor) after explicit
broadcasts, and a matrix product of two of them ``mul`` then ``sum`` over the inner dimension;
softmax, log-softmax, LayerNorm, RMSNorm, GroupNorm, var and std stay single composite nodes
that the normaliser lowers (:mod:`lipbound.ops.composite`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lipbound.errors import TracingError, UnsupportedOperationError
from lipbound.graph.ir import INPUT, Graph, Node, freeze
from lipbound.ops.piecewise import hardsigmoid_params, hardtanh_params


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

    def aux(self, fx: torch.fx.Node, tag: str, op: str, inputs: list[Var],
            shape: tuple[int, ...], params: dict | None = None) -> Var:
        """A helper node named after ``fx`` that does not stand for ``fx``'s value."""
        name = f"{fx.name}__{tag}"
        self.nodes.append(Node(name, op, tuple(v.name for v in inputs), tuple(shape),
                               freeze(params), where_of(fx)))
        return Var(name, tuple(shape))

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


def _broadcast(b, fx, v: Var, shape: tuple[int, ...], tag: str) -> Var:
    """``v`` broadcast to the per-sample ``shape`` by explicit reshape/expand nodes."""
    if v.shape == shape:
        return v
    if len(v.shape) < len(shape):
        v = b.aux(fx, tag + "_r", "reshape", [v], (1,) * (len(shape) - len(v.shape)) + v.shape,
                  {"shape": (1,) * (len(shape) - len(v.shape)) + v.shape})
    if v.shape == shape:
        return v
    return b.aux(fx, tag + "_x", "expand", [v], shape, {"shape": shape})


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


def _sdpa(b, fx, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):
    """scaled_dot_product_attention: softmax(q k^T * scale + mask) v, lowered to matrix
    products of activations and a softmax node (float masks only)."""
    if not all(isinstance(t, Var) for t in (q, k, v)):
        raise _unsupported(fx, "attention needs input-dependent queries, keys and values")
    if is_causal or float(dropout_p) != 0.0 or enable_gqa or isinstance(attn_mask, Var) or (
            isinstance(attn_mask, Tensor) and attn_mask.dtype == torch.bool):
        raise _unsupported(fx, "attention is supported without dropout, causal or boolean "
                               "masks (give an additive float mask instead)")
    nd = len(k.shape)
    swap = tuple(range(nd - 2)) + (nd - 1, nd - 2)
    kt = b.aux(fx, "kt", "permute", [k], tuple(k.shape[i] for i in swap), {"dims": swap})
    scores = _matmul_vars(b, fx, q, kt, "scores")
    c = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    shift = None
    if attn_mask is not None:
        shift = _as_per_sample(attn_mask, fx, len(scores.shape)).to(torch.float64)
        if not bool(torch.isfinite(shift).all()):
            raise _unsupported(fx, "attention masks with infinite entries are not supported")
    scaled = b.aux(fx, "scaled", "scale_shift", [scores], scores.shape,
                   {"scale": torch.tensor(c, dtype=torch.float64), "shift": shift})
    att = b.aux(fx, "softmax", "softmax", [scaled], scores.shape,
                {"dim": len(scores.shape) - 1, "log": False})
    _matmul_vars(b, fx, att, v)


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


def _one(c: Tensor) -> Tensor:
    return torch.ones((), dtype=c.dtype)


# ------------------------------------------------------------------------ activations
def _relu(b, fx, x):
    b.add(fx, "relu", [x])


def _clamp(b, fx, x, min=None, max=None):
    if isinstance(min, (Tensor, Var)) or isinstance(max, (Tensor, Var)):
        raise _unsupported(fx, "clamp with tensor limits is not supported (use numbers)")
    if min is not None and max is not None:
        lo, hi = float(min), float(max)
        if not lo < hi:
            raise _unsupported(fx, f"clamp needs min < max, got {lo} and {hi}")
        return b.add(fx, "pwl", [x], hardtanh_params(lo, hi))
    if min is not None:
        return _clamp_min(b, fx, x, min)
    if max is not None:
        return _clamp_max(b, fx, x, max)
    return b.alias(fx, x)


def _shift(c: float) -> dict:
    return {"scale": torch.tensor(1.0, dtype=torch.float64),
            "shift": torch.tensor(c, dtype=torch.float64)}


def _clamp_min(b, fx, x, min):
    """max(x, c) = c + relu(x - c): a shifted ReLU (exact, relaxed as tightly)."""
    c = float(min)
    if c == 0.0:
        return b.add(fx, "relu", [x])
    z = b.aux(fx, "shift", "scale_shift", [x], x.shape, _shift(-c))
    r = b.aux(fx, "relu", "relu", [z], x.shape)
    return b.add(fx, "scale_shift", [r], _shift(c))


def _clamp_max(b, fx, x, max):
    """min(x, c) = c - relu(c - x)."""
    c = float(max)
    flip = {"scale": torch.tensor(-1.0, dtype=torch.float64),
            "shift": torch.tensor(c, dtype=torch.float64)}
    z = b.aux(fx, "flip", "scale_shift", [x], x.shape, flip)
    r = b.aux(fx, "relu", "relu", [z], x.shape)
    return b.add(fx, "scale_shift", [r], flip)


def _hardtanh(b, fx, x, min_val=-1.0, max_val=1.0):
    return _clamp(b, fx, x, min_val, max_val)


def _relu6(b, fx, x):
    b.add(fx, "pwl", [x], hardtanh_params(0.0, 6.0))


def _hardsigmoid(b, fx, x):
    b.add(fx, "pwl", [x], hardsigmoid_params())


def _neg(b, fx, x):
    b.add(fx, "scale_shift", [x], {"scale": torch.tensor(-1.0, dtype=torch.float64),
                                   "shift": None})


def _power(p: float) -> Callable:
    def handler(b, fx, x):
        b.add(fx, "pow", [x], {"exponent": p, "coeff": 1.0})

    return handler


def _pow(b, fx, x, exponent):
    if isinstance(exponent, (Tensor, Var)) or not isinstance(x, Var):
        raise _unsupported(fx, "pow is supported with an input-dependent base and a constant "
                               "number as exponent")
    p = float(exponent)
    if p == 1.0:
        return b.alias(fx, x)
    if p == 2.0:
        return b.add(fx, "square", [x])
    b.add(fx, "pow", [x], {"exponent": p, "coeff": 1.0})


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


def _dims(fx, x: Var, dims) -> tuple[int, ...]:
    """Per-sample dims of a reduction (the batch dimension cannot be reduced)."""
    nd = len(x.shape) + 1
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return tuple(range(len(x.shape)))
    if isinstance(dims, int):
        dims = [dims]
    dims = sorted({d % nd for d in dims})
    if 0 in dims:
        raise _unsupported(fx, "reductions over the batch dimension are not supported")
    return tuple(d - 1 for d in dims)


def _sum(b, fx, x, dims=None, keepdim=False, dtype=None):
    b.add(fx, "sum", [x], {"dims": _dims(fx, x, dims), "keepdim": bool(keepdim), "scale": 1.0})


def _mean_any(b, fx, x, dims, keepdim=False):
    d = _dims(fx, x, dims)
    n = 1
    for i in d:
        n *= x.shape[i]
    b.add(fx, "sum", [x], {"dims": d, "keepdim": bool(keepdim), "scale": 1.0 / n})


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


def _rsub(b, fx, x, other, alpha=1):
    """other - alpha * x for a constant ``other``."""
    if not isinstance(x, Var) or isinstance(other, Var):
        raise _unsupported(fx, "rsub needs an input-dependent tensor and a constant")
    c = _as_per_sample(other, fx, len(per_sample_shape(fx)))
    b.add(fx, "scale_shift", [x], {"scale": -float(alpha) * _one(c), "shift": c})


def _variance(sqrt: bool) -> Callable:
    def handler(b, fx, x, dims=None, unbiased=None, keepdim=False, *, correction=None):
        if isinstance(dims, bool):  # var(x, unbiased) spelling
            dims, unbiased = None, dims
        corr = correction if correction is not None else (
            0.0 if unbiased is False else 1.0)
        b.add(fx, "var", [x], {"dims": _dims(fx, x, dims), "correction": float(corr),
                               "keepdim": bool(keepdim), "sqrt": sqrt})

    return handler


def _flip(b, fx, x, dims):
    b.add(fx, "flip", [x], {"dims": _dims(fx, x, dims)})


def _softmax(log: bool) -> Callable:
    def handler(b, fx, x, dim, *_, **__):
        d = _dims(fx, x, dim)
        b.add(fx, "softmax", [x], {"dim": d[0], "log": log})

    return handler


def _const_param(fx, t, what: str):
    if isinstance(t, Var):
        raise _unsupported(fx, f"the {what} depends on the input")
    return None if t is None else t.detach()


def _layer_norm(b, fx, x, normalized_shape, weight=None, bias=None, eps=1e-5,
                cudnn_enable=True):
    b.add(fx, "layer_norm", [x], {"ndim": len(normalized_shape), "eps": float(eps),
                                  "weight": _const_param(fx, weight, "weight"),
                                  "bias": _const_param(fx, bias, "bias")})


def _native_layer_norm(b, fx, x, normalized_shape, weight, bias, eps):
    shape = tuple(int(s) for s in fx.meta["val"][0].shape[1:])
    var = b.add(fx, "layer_norm", [x], {"ndim": len(normalized_shape), "eps": float(eps),
                                        "weight": _const_param(fx, weight, "weight"),
                                        "bias": _const_param(fx, bias, "bias")}, shape=shape)
    b.vars[fx.name] = (var, None, None)


def _rms_norm(b, fx, x, normalized_shape, weight=None, eps=None):
    if eps is None:
        eps = torch.finfo(fx.args[0].meta["val"].dtype).eps
    b.add(fx, "rms_norm", [x], {"ndim": len(normalized_shape), "eps": float(eps),
                                "weight": _const_param(fx, weight, "weight"), "bias": None})


def _channel(t, x: Var):
    return None if t is None else t.reshape(-1, *([1] * (len(x.shape) - 1)))


def _group_norm(b, fx, x, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    b.add(fx, "group_norm", [x], {"groups": int(num_groups), "eps": float(eps),
                                  "weight": _channel(_const_param(fx, weight, "weight"), x),
                                  "bias": _channel(_const_param(fx, bias, "bias"), x)})


def _native_group_norm(b, fx, x, weight, bias, N, C, HxW, group, eps):
    shape = tuple(int(s) for s in fx.meta["val"][0].shape[1:])
    var = b.add(fx, "group_norm", [x], {"groups": int(group), "eps": float(eps),
                                        "weight": _channel(_const_param(fx, weight, "weight"),
                                                           x),
                                        "bias": _channel(_const_param(fx, bias, "bias"), x)},
                shape=shape)
    b.vars[fx.name] = (var, None, None)


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
    "aten.bmm.default": _matmul,
    "aten.neg.default": _neg,
    "aten.abs.default": _unary("abs"),
    "aten.clamp_max.default": _clamp_max,
    "aten.hardtanh.default": _hardtanh,
    "aten.relu6.default": _relu6,
    "aten.hardsigmoid.default": _hardsigmoid,
    "aten.hardswish.default": _unary("hardswish"),
    "aten.exp.default": _unary("exp"),
    "aten.log.default": _unary("log"),
    "aten.sqrt.default": _power(0.5),
    "aten.rsqrt.default": _power(-0.5),
    "aten.reciprocal.default": _power(-1.0),
    "aten.pow.Tensor_Scalar": _pow,
    "aten.square.default": _unary("square"),
    "aten.sum.dim_IntList": _sum,
    "aten.amax.default": _amax,
    "aten.amin.default": _amin,
    "aten.max.dim": _max_dim,
    "aten.min.dim": _min_dim,
    "aten.expand.default": _expand,
    "aten.flip.default": _flip,
    "aten.var.dim": _variance(False),
    "aten.var.correction": _variance(False),
    "aten.std.dim": _variance(True),
    "aten.std.correction": _variance(True),
    "aten.rsub.Scalar": _rsub,
    "aten.rsub.Tensor": _rsub,
    "aten.chunk.default": _chunk,
    "aten.scaled_dot_product_attention.default": _sdpa,
    "aten.split.Tensor": _split,
    "aten.split_with_sizes.default": _split_sizes,
    "aten.softmax.int": _softmax(False),
    "aten._softmax.default": _softmax(False),
    "aten.log_softmax.int": _softmax(True),
    "aten._log_softmax.default": _softmax(True),
    "aten.layer_norm.default": _layer_norm,
    "aten.native_layer_norm.default": _native_layer_norm,
    "aten.rms_norm.default": _rms_norm,
    "aten.group_norm.default": _group_norm,
    "aten.native_group_norm.default": _native_group_norm,
    "aten.adaptive_avg_pool1d.default": _adaptive_avg_pool1d,
    "aten._adaptive_avg_pool2d.default": _adaptive_avg_pool2d,
    "aten.upsample_nearest2d.vec": _upsample_nearest,
    "aten.upsample_nearest1d.vec": _upsample_nearest,
    "aten.upsample_nearest2d.default": _upsample_nearest2d,
}

SUPPORTED = sorted(HANDLERS)
