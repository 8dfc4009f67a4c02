"""Per-op converters of :func:`lipbound.io.load_onnx` for the computing ops, and the op table.

Each converter ``f(cv, ins, attrs)`` gets the converter ``cv`` (positioned on the node,
``cv.node``), the node's input values (:class:`~lipbound.io._onnx_graph.Dyn`,
:class:`~lipbound.io._onnx_graph.Const` or None for an omitted optional input) and its decoded
attributes, and returns the node's output values, appending torch steps with ``cv.emit``.
:data:`HANDLERS` maps op types to converters (the shape-only ones live in
:mod:`lipbound.io._onnx_shape_ops`); :data:`SUPPORTED_OPS` lists them for messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lipbound.errors import InputError
from lipbound.io import _onnx_modules as M
from lipbound.io._onnx_graph import Const, Dyn, Value
from lipbound.io._onnx_shape_ops import (
    concat,
    flatten,
    gather,
    reshape,
    slice_,
    squeeze,
    transpose,
    unsqueeze,
)

if TYPE_CHECKING:
    from lipbound.io.onnx_loader import _Converter


def _spatial(v: Dyn, attrs: dict, kernel: Sequence[int]) -> tuple:
    """(stride, dilation, begin pads, end pads) for a conv/pool over ``v``'s spatial axes."""
    n = len(kernel)
    stride = tuple(attrs.get("strides", [1] * n))
    dilation = tuple(attrs.get("dilations", [1] * n))
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(v.shape[2:], kernel, stride, dilation):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else big)
            end.append(big if auto_pad == "SAME_UPPER" else small)
    elif auto_pad == "VALID":
        begin, end = [0] * n, [0] * n
    else:
        pads = list(attrs.get("pads", [0] * (2 * n)))
        begin, end = pads[:n], pads[n:]
    return stride, dilation, tuple(begin), tuple(end)


def _fpad(begin: Sequence[int], end: Sequence[int]) -> tuple[int, ...]:
    out: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        out += [int(b), int(e)]
    return tuple(out)


def _image(cv: _Converter, x: Value, dims: Sequence[int]) -> Dyn:
    """``x`` as an [N=1, C, *spatial] tensor with the batch in place of N."""
    if not isinstance(x, Dyn):
        cv.unsupported("its data input must be computed from the network input")
    if len(x.shape) - 2 not in dims:
        cv.unsupported(f"input of ONNX shape {list(x.shape)} (rank {len(x.shape)})")
    return cv.layout(x, True)


def activation(cv: _Converter, ins, attrs):
    x = ins[0]
    numeric = {k: v for k, v in attrs.items() if isinstance(v, (int, float, str))}
    step = M.Activation(cv.step_name(), cv.node.op_type, numeric)
    return [cv.emit(step, [x], x.shape, x.lead)]


def clip(cv: _Converter, ins, attrs):
    """Clip with constant limits (attributes before opset 11, inputs from 11 on)."""
    x = ins[0]
    if cv.opset < 11:
        low, high = attrs.get("min"), attrs.get("max")
    else:
        if any(isinstance(v, Dyn) for v in ins[1:]):
            cv.unsupported("Clip limits computed from the input")
        low, high = (None if len(ins) <= i or ins[i] is None
                     else float(ins[i].array.reshape(-1)[0]) for i in (1, 2))
    step = M.Clip(cv.step_name(), None if low is None else float(low),
                  None if high is None else float(high))
    return [cv.emit(step, [x], x.shape, x.lead)]


def softmax(cv: _Converter, ins, attrs):
    """Softmax / LogSoftmax along ``axis`` (before opset 13 only the last axis, where the
    old flattening semantics agree)."""
    x = ins[0]
    rank = len(x.shape)
    axis = int(attrs.get("axis", -1 if cv.opset >= 13 else 1)) % rank
    if cv.opset < 13 and axis != rank - 1:
        cv.unsupported(f"{cv.node.op_type} over axes {axis}.. (opset {cv.opset}) of a rank "
                       f"{rank} tensor")
    if x.lead and axis == 0:
        cv.unsupported("softmax over the batch axis")
    dim = axis if x.lead else axis + 1
    step = M.Softmax(cv.step_name(), dim, cv.node.op_type == "LogSoftmax")
    return [cv.emit(step, [x], x.shape, x.lead)]


def variadic(cv: _Converter, ins, attrs):
    """Sum / Max / Min of any number of operands (broadcast), as a chain of binary steps."""
    op = {"Sum": "Add", "Max": "Max", "Min": "Min"}[cv.node.op_type]
    acc = ins[0]
    for v in ins[1:]:
        acc = binary(cv, [acc, v], {}, op)[0]
    return [acc]


def identity(cv: _Converter, ins, attrs):
    if cv.node.op_type == "Dropout" and len(ins) > 2 and ins[2] is not None:
        if isinstance(ins[2], Dyn) or bool(ins[2].array):
            cv.unsupported("Dropout in training mode")
    return [ins[0]]


def binary(cv: _Converter, ins, attrs, op_type: str | None = None):
    op_type = op_type or cv.node.op_type
    op = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Max": "max",
          "Min": "min"}[op_type]
    shapes = [v.shape if isinstance(v, Dyn) else v.array.shape for v in ins]
    try:
        out = tuple(np.broadcast_shapes(*shapes))
    except ValueError as exc:
        raise InputError(f"{cv.node_where}: shapes {shapes} do not broadcast") from exc
    lead = len(out) >= 2 and out[0] == 1
    dyn = []
    for v in ins:
        if isinstance(v, Dyn):
            padded = (1,) * (len(out) - len(v.shape)) + v.shape
            v = cv.reshape(v, padded, lead)
            dyn.append(v)
    if len(dyn) == 2:
        step = M.Binary(cv.step_name(), op)
    else:
        const_first = isinstance(ins[0], Const)
        const = ins[0] if const_first else ins[1]
        step = M.Binary(cv.step_name(), op, cv.tensor(const), const_first)
    return [cv.emit(step, dyn, out, lead)]


def gemm(cv: _Converter, ins, attrs):
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    if not isinstance(a, Dyn) or not isinstance(b, Const) or isinstance(c, Dyn):
        cv.unsupported("only A computed from the input, with constant B and C")
    if len(a.shape) != 2 or b.array.ndim != 2:
        raise InputError(f"{cv.node_where}: Gemm needs 2-d A and B")
    if attrs.get("transA", 0):
        cv.unsupported("transA=1 on the computed operand")
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    w = b.array if attrs.get("transB", 0) else b.array.T
    weight = cv.tensor(Const(alpha * w))
    n = weight.shape[0]
    bias = extra = None
    if c is not None:
        cb = beta * c.array
        if cb.ndim <= 1 or (cb.ndim == 2 and cb.shape[0] == 1):
            bias = cv.tensor(Const(np.broadcast_to(cb.reshape(-1), (n,)).copy()))
        else:  # a per-row bias: add it after the product
            extra = Const(cb)
    y = cv.emit(M.Linear(cv.step_name(), weight, bias), [a], a.shape[:-1] + (n,), a.lead)
    return [y] if extra is None else binary(cv, [y, extra], {}, "Add")


def matmul(cv: _Converter, ins, attrs):
    a, b = ins
    if isinstance(a, Dyn) and isinstance(b, Dyn):
        cv.unsupported("MatMul of two tensors computed from the input")
    if isinstance(a, Dyn):
        w = b.array
        if w.ndim == 1:
            y = cv.emit(
                M.Linear(cv.step_name(), cv.tensor(Const(w[None, :])), None),
                [cv.layout(a, False) if len(a.shape) == 1 else a],
                None,
                a.lead and len(a.shape) > 1,
            )
            return [cv.reshape(y, a.shape[:-1])]
        if w.ndim != 2:
            cv.unsupported(f"a constant right operand of rank {w.ndim}")
        x = cv.layout(a, False) if len(a.shape) == 1 else a
        weight = cv.tensor(Const(w.T))
        return [
            cv.emit(
                M.Linear(cv.step_name(), weight, None), [x], x.shape[:-1] + (w.shape[1],), x.lead
            )
        ]
    w = a.array
    if w.ndim != 2 or len(b.shape) < 1:
        cv.unsupported(f"a constant left operand of rank {w.ndim}")
    weight = cv.tensor(Const(w))
    if len(b.shape) == 1:
        x = cv.layout(b, False)
        return [cv.emit(M.Linear(cv.step_name(), weight, None), [x], (w.shape[0],), False)]
    x = cv.layout(b, False) if len(b.shape) == 2 else b
    out_shape = x.shape[:-2] + (w.shape[0], x.shape[-1])
    return [cv.emit(M.Linear(cv.step_name(), weight, None, left=True), [x], out_shape, x.lead)]


def conv(cv: _Converter, ins, attrs):
    w, bias = ins[1], ins[2] if len(ins) > 2 else None
    if not isinstance(w, Const) or isinstance(bias, Dyn):
        cv.unsupported("convolution weights and bias must be constants")
    x = _image(cv, ins[0], (1, 2))
    kernel = tuple(attrs.get("kernel_shape", w.array.shape[2:]))
    if len(kernel) != len(x.shape) - 2 or tuple(w.array.shape[2:]) != kernel:
        cv.unsupported(f"kernel_shape {list(kernel)} vs weights {list(w.array.shape)}")
    stride, dilation, begin, end = _spatial(x, attrs, kernel)
    pre_pad = None
    if begin != end:
        pre_pad, begin = _fpad(begin, end), (0,) * len(kernel)
    step = M.Conv(
        cv.step_name(),
        cv.tensor(w),
        None if bias is None else cv.tensor(bias),
        stride,
        tuple(begin),
        dilation,
        int(attrs.get("group", 1)),
        pre_pad,
    )
    return [cv.emit(step, [x], None, True)]


def pool(cv: _Converter, ins, attrs):
    kind = "max" if cv.node.op_type == "MaxPool" else "avg"
    x = _image(cv, ins[0], (2,))
    kernel = tuple(attrs["kernel_shape"])
    stride, dilation, begin, end = _spatial(x, attrs, kernel)
    if kind == "avg" and any(d != 1 for d in dilation):
        cv.unsupported("AveragePool with dilations")
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    include = bool(attrs.get("count_include_pad", 0))
    pre_pad = None
    fits = all(2 * p <= k for p, k in zip(begin, kernel))
    if begin != end or not fits:
        if kind == "max" or not include or ceil_mode:
            cv.unsupported(f"{cv.node.op_type} with pads {list(begin) + list(end)}")
        pre_pad, begin = _fpad(begin, end), (0,) * len(kernel)
    if ceil_mode and any(p > 0 for p in begin):
        cv.unsupported("ceil_mode together with padding")
    step = M.Pool(
        cv.step_name(), kind, kernel, stride, tuple(begin), dilation, ceil_mode, include, pre_pad
    )
    return [cv.emit(step, [x], None, True)]


def global_pool(cv: _Converter, ins, attrs):
    x = _image(cv, ins[0], (2,))
    k = tuple(x.shape[2:])
    step = M.Pool(cv.step_name(), "avg", k, k, (0, 0), (1, 1), False, False, None)
    return [cv.emit(step, [x], x.shape[:2] + (1, 1), True)]


def pad(cv: _Converter, ins, attrs):
    x = ins[0]
    mode = attrs.get("mode", "constant")
    if mode != "constant":
        cv.unsupported(f"Pad mode {mode!r} (only 'constant')")
    rank = len(x.shape)
    if cv.opset < 11:
        pads, value = list(attrs.get("pads", [])), float(attrs.get("value", 0.0))
        axes = list(range(rank))
    else:
        if any(isinstance(v, Dyn) for v in ins[1:]):
            cv.unsupported("pads, constant_value and axes must be constants")
        pads = [int(p) for p in ins[1].array.reshape(-1)]
        value = float(ins[2].array.reshape(-1)[0]) if len(ins) > 2 and ins[2] is not None else 0.0
        axes = list(range(rank))
        if len(ins) > 3 and ins[3] is not None:
            axes = [int(a) % rank for a in ins[3].array.reshape(-1)]
    n = len(axes)
    if len(pads) != 2 * n:
        raise InputError(f"{cv.node_where}: {len(pads)} pads for {n} axes")
    begin, end = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        begin[a], end[a] = pads[i], pads[i + n]
    if not any(begin) and not any(end):
        return [x]
    lead = rank >= 2 and x.shape[0] == 1 and begin[0] == 0 and end[0] == 0
    x = cv.layout(x, lead)
    first = 1 if lead else 0
    fpad = _fpad(begin[first:], end[first:])
    out_shape = tuple(s + b + e for s, b, e in zip(x.shape, begin, end))
    return [cv.emit(M.Pad(cv.step_name(), fpad, value), [x], out_shape, lead)]


def batchnorm(cv: _Converter, ins, attrs):
    if attrs.get("training_mode", 0) or attrs.get("spatial", 1) != 1:
        cv.unsupported("BatchNormalization in training mode or with spatial=0")
    if any(not isinstance(v, Const) for v in ins[1:5]):
        cv.unsupported("scale, bias, mean and var must be constants")
    x = ins[0]
    if not isinstance(x, Dyn) or len(x.shape) < 2:
        cv.unsupported("input of rank < 2")
    x = cv.layout(x, True)
    scale, bias, mean, var = (cv.tensor(v) for v in ins[1:5])
    step = M.BatchNorm(cv.step_name(), scale, bias, mean, var, float(attrs.get("epsilon", 1e-5)))
    return [cv.emit(step, [x], x.shape, True)]


HANDLERS = {
    **dict.fromkeys(M.UNARY, activation),
    "Clip": clip,
    "Softmax": softmax,
    "LogSoftmax": softmax,
    "Sum": variadic,
    "Max": variadic,
    "Min": variadic,
    "Identity": identity,
    "Dropout": identity,
    "Add": binary,
    "Sub": binary,
    "Mul": binary,
    "Div": binary,
    "Gemm": gemm,
    "MatMul": matmul,
    "Conv": conv,
    "AveragePool": pool,
    "MaxPool": pool,
    "GlobalAveragePool": global_pool,
    "Pad": pad,
    "BatchNormalization": batchnorm,
    "Flatten": flatten,
    "Reshape": reshape,
    "Squeeze": squeeze,
    "Unsqueeze": unsqueeze,
    "Transpose": transpose,
    "Concat": concat,
    "Slice": slice_,
    "Gather": gather,
}

#: ONNX op types :func:`load_onnx` converts on tensors computed from the input. ``Constant`` and
#: ``Shape`` are always fine; any other op is accepted when all its inputs are constants (folded).
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted([*HANDLERS, "Constant", "Shape"]))
