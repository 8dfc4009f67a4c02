"""Read an ONNX network into a batch-agnostic ``torch.nn.Module``.

:func:`load_onnx` walks the ONNX graph once, folds every node whose inputs are all constants
(``Constant``, ``Shape`` arithmetic, weight preprocessing ...) with ONNX's own reference
evaluator, and turns each remaining node into a small module of
:mod:`lipbound.io._onnx_modules` whose forward uses only standard torch calls, so that
``torch.export`` yields plain aten ops (linear, conv2d, relu, add, view ...).

Batch handling. ONNX files of the verification community usually fix the batch size to 1 (input
``[1, 1, 28, 28]``), some have no batch axis at all (``[1]``), and reshapes often hard-code the
leading 1. The converter therefore tracks, for every tensor, its ONNX shape (as computed for one
sample) and how its torch counterpart holds a batch of B samples: either the leading ONNX axis
of size 1 *is* the batch axis (``lead``: torch ``[B, *shape[1:]]``), or the batch axis comes in
front of the whole ONNX shape (torch ``[B, *shape]``). Every op is converted so that each of the B
samples goes through exactly the computation ONNX does for one sample; a reshape with a
hard-coded leading 1 keeps axis 0 as the batch axis. Ops that would mix samples (a MatMul with two
computed operands, a Concat with a constant, ...) raise
:class:`~lipbound.errors.UnsupportedOperationError`.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lipbound.errors import InputError, ShapeError, UnsupportedOperationError
from lipbound.io import _onnx_modules as M

__all__ = ["SUPPORTED_OPS", "load_onnx", "onnx_input_shape"]


@dataclass(frozen=True)
class _Dyn:
    """A tensor computed from the network input.

    ``shape`` is its ONNX shape for one sample; the torch tensor is ``[B, *shape[1:]]`` when
    ``lead`` (then ``shape[0] == 1``) and ``[B, *shape]`` otherwise.
    """

    key: str
    shape: tuple[int, ...]
    lead: bool

    @property
    def sample(self) -> tuple[int, ...]:
        return self.shape[1:] if self.lead else self.shape


@dataclass(frozen=True)
class _Const:
    array: np.ndarray


_Value = _Dyn | _Const

# ONNX element types lipbound can run as the network input
_FLOAT_TYPES = {1: torch.float32, 11: torch.float64, 10: torch.float16}


def _read_model(path: str | Path):
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX file not found: {str(path)!r}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return onnx.load_model_from_string(fh.read())
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise InputError(f"{path}: not a readable ONNX model ({exc})") from exc


def _graph_input(model, path) -> tuple[object, tuple]:
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if len(inputs) != 1:
        raise InputError(
            f"{path}: lipbound needs a network with exactly one input, this one has "
            f"{len(inputs)}: {[i.name for i in inputs]}"
        )
    dims = []
    for d in inputs[0].type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return inputs[0], tuple(dims)


def _inferred_shapes(model) -> dict[str, tuple[int, ...]]:
    """Static shapes ONNX shape inference finds for intermediate tensors (a cross-check)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is only a safety net
        return {}
    out = {}
    for info in inferred.graph.value_info:
        ttype = info.type.tensor_type
        if ttype.HasField("shape") and all(d.HasField("dim_value") for d in ttype.shape.dim):
            out[info.name] = tuple(d.dim_value for d in ttype.shape.dim)
    return out


def onnx_input_shape(path: str | Path) -> tuple:
    """The input shape the ONNX file declares (symbolic axes as their names, unknown as ``"?"``)."""
    model = _read_model(path)
    return _graph_input(model, path)[1]


def load_onnx(path: str | Path, input_shape: Sequence[int] | None = None) -> M.OnnxModel:
    """Read an ONNX network and return an equivalent ``torch.nn.Module`` in eval mode.

    The module maps ``[B, *input_shape]`` to ``[B, K]`` for any batch size B (K =
    ``model.output_size``, the number of ONNX output elements per sample). By default
    ``input_shape`` is the ONNX input shape without its batch axis: when the declared input has
    at least two axes and the first is 1 or symbolic, that axis is the batch axis
    (``[1, 1, 28, 28]`` -> ``input_shape == (1, 28, 28)``, ``[1, 784, 1]`` -> ``(784, 1)``,
    ACAS Xu's ``[1, 1, 1, 5]`` -> ``(1, 1, 5)``); otherwise the whole declared shape is one
    sample (``[5]`` -> ``(5,)``). Pass ``input_shape`` (e.g. ``(784,)``, the flattened input that
    VNN-LIB files describe) to feed samples of another shape with the same number of elements;
    they are reshaped (row-major) to the ONNX shape first. The chosen shape is
    ``model.input_shape``; ``model.onnx_input_shape`` keeps the declared one.

    Weights keep the file's dtype (float32 for most networks); call ``model.double()`` for
    float64. Supported ONNX ops: :data:`SUPPORTED_OPS`; any node whose inputs are all constants
    is folded at load time, whatever its type.

    Raises :class:`~lipbound.errors.InputError` for a missing or unreadable file, a network with
    several inputs or outputs, or a bad ``input_shape``, and
    :class:`~lipbound.errors.UnsupportedOperationError` (naming the ONNX op type, the node and
    the supported ops) for a node lipbound cannot convert.
    """
    model = _read_model(path)
    return _Converter(model, str(path), input_shape).convert().eval()


class _Converter:
    def __init__(self, model, source: str, input_shape: Sequence[int] | None) -> None:
        self.model = model
        self.graph = model.graph
        self.source = source
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13
        )
        self.values: dict[str, _Value] = {}
        self.steps: list[M.Step] = []
        self.examples: dict[str, torch.Tensor] = {}
        self.user_input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.node = None  # the node being converted
        self.node_where = ""

    # ------------------------------------------------------------------ driver
    def convert(self) -> M.OnnxModel:
        from onnx import numpy_helper

        for t in self.graph.initializer:
            self.values[t.name] = _Const(numpy_helper.to_array(t))
        inp, declared = _graph_input(self.model, self.source)
        dtype = _FLOAT_TYPES.get(inp.type.tensor_type.elem_type)
        if dtype is None:
            raise InputError(
                f"{self.source}: input {inp.name!r} has ONNX element type "
                f"{inp.type.tensor_type.elem_type}; lipbound needs a floating-point input"
            )
        self.dtype = dtype
        x = self._input_value(inp.name, declared)
        self.values[inp.name] = x

        handlers = _HANDLERS
        inferred = _inferred_shapes(self.model)
        for index, node in enumerate(self.graph.node):
            self.node = node
            label = f"node {node.name!r}" if node.name else f"unnamed node #{index}"
            self.node_where = f"ONNX {label} (outputs {list(node.output)}) of {self.source}"
            ins = []
            for name in node.input:
                if name == "":
                    ins.append(None)
                elif name not in self.values:
                    raise InputError(
                        f"{self.node_where}: input {name!r} is not defined before the node "
                        "(the graph is not topologically sorted or refers to a missing tensor)"
                    )
                else:
                    ins.append(self.values[name])
            if node.op_type == "Shape" and isinstance(ins[0], _Dyn):
                outs = [self._shape_of(ins[0])]
            elif node.domain in ("", "ai.onnx") and all(
                v is None or isinstance(v, _Const) for v in ins
            ):
                outs = self._fold(node, ins)
            elif node.domain not in ("", "ai.onnx") or node.op_type not in handlers:
                raise UnsupportedOperationError(
                    node.op_type
                    if node.domain in ("", "ai.onnx")
                    else f"{node.domain}.{node.op_type}",
                    self.node_where,
                    SUPPORTED_OPS,
                )
            else:
                outs = handlers[node.op_type](self, ins, self._attrs(node))
                used = [o for o in node.output[1:] if o]
                if len(outs) == 1 and used and any(self._is_consumed(o) for o in used):
                    self._unsupported(
                        f"its extra outputs {used} are used; only the first is supported"
                    )
            for name, value in zip(node.output, outs):
                if not name:
                    continue
                if isinstance(value, _Dyn) and inferred.get(name, value.shape) != value.shape:
                    self._unsupported(
                        f"ONNX shape inference gives output {name!r} the shape "
                        f"{list(inferred[name])}, the conversion {list(value.shape)}"
                    )
                self.values[name] = value

        if len(self.graph.output) != 1:
            raise InputError(
                f"{self.source}: lipbound needs a network with one output, this one has "
                f"{len(self.graph.output)}: {[o.name for o in self.graph.output]}"
            )
        out = self.values.get(self.graph.output[0].name)
        if not isinstance(out, _Dyn):
            raise InputError(f"{self.source}: the output does not depend on the input")
        size = math.prod(out.sample)
        if len(out.sample) != 1:
            out = self._emit(M.Reshape("<output>", (size,)), [out], (size,), lead=False)
        return M.OnnxModel(
            self.steps, "input", out.key, self.input_shape, size, declared, self.source
        )

    def _input_value(self, name: str, declared: tuple) -> _Dyn:
        if not declared:
            raise InputError(f"{self.source}: input {name!r} has no declared shape")
        rest = declared[1:] if len(declared) >= 2 else declared
        if any(not isinstance(d, int) or d <= 0 for d in rest):
            raise InputError(
                f"{self.source}: input {name!r} has shape {list(declared)}; lipbound needs "
                "static sizes except for the batch axis"
            )
        lead = len(declared) >= 2 and (not isinstance(declared[0], int) or declared[0] in (0, 1))
        shape = ((1,) + tuple(rest)) if lead else tuple(declared)
        sample = shape[1:] if lead else shape
        self.input_shape = self.user_input_shape or sample
        if math.prod(self.input_shape) != math.prod(sample) or any(
            s <= 0 for s in self.input_shape
        ):
            raise InputError(
                f"{self.source}: input_shape {list(self.input_shape)} does not hold the "
                f"{math.prod(sample)} elements of the ONNX input {list(declared)}"
            )
        self.examples["input"] = torch.randn(2, *self.input_shape, dtype=self.dtype)
        if self.input_shape == sample:
            return _Dyn("input", shape, lead)
        x = _Dyn("input", self.input_shape, False)
        return self._emit(M.Reshape("<input>", sample), [x], shape, lead)

    # ------------------------------------------------------------------ helpers
    def _attrs(self, node) -> dict:
        from onnx import helper

        out = {}
        for a in node.attribute:
            v = helper.get_attribute_value(a)
            out[a.name] = v.decode() if isinstance(v, bytes) else v
        return out

    def _is_consumed(self, name: str) -> bool:
        return any(name in n.input for n in self.graph.node) or any(
            o.name == name for o in self.graph.output
        )

    def _unsupported(self, hint: str):
        raise UnsupportedOperationError(
            self.node.op_type, self.node_where, SUPPORTED_OPS, hint=f"Not supported here: {hint}."
        )

    def _fold(self, node, ins: list) -> list[_Value]:
        from onnx.reference import ReferenceEvaluator

        feeds = {n: v.array for n, v in zip(node.input, ins) if v is not None}
        try:
            evaluator = ReferenceEvaluator(node, opsets={"": self.opset})
            results = evaluator.run(None, feeds)
        except Exception as exc:
            raise UnsupportedOperationError(
                node.op_type,
                self.node_where,
                SUPPORTED_OPS,
                hint=f"Its inputs are constants but folding it failed: {exc}",
            ) from exc
        return [_Const(np.asarray(r)) for r in results]

    def _shape_of(self, v: _Dyn) -> _Const:
        attrs = self._attrs(self.node)
        shape = np.array(v.shape, dtype=np.int64)
        return _Const(shape[attrs.get("start", 0) : attrs.get("end", len(shape))])

    def _tensor(self, c: _Const) -> torch.Tensor:
        a = c.array
        if np.issubdtype(a.dtype, np.floating):
            return torch.from_numpy(np.ascontiguousarray(a).copy())
        return torch.from_numpy(np.ascontiguousarray(a).astype(np.float64)).to(self.dtype)

    def _emit(self, step: M.Step, ins: list[_Dyn], shape: tuple | None, lead: bool) -> _Dyn:
        """Append ``step`` reading ``ins``; return its output value (``shape`` checked if given)."""
        key = f"v{len(self.steps)}"
        step.inputs = tuple(v.key for v in ins)
        step.output = key
        with torch.no_grad():
            out = step(*[self.examples[v.key] for v in ins])
        self.examples[key] = out
        sample = tuple(out.shape[1:])
        got = ((1,) + sample) if lead else sample
        if out.shape[0] != 2 or (shape is not None and tuple(shape) != got):
            raise ShapeError(
                f"{self.node_where}: internal shape mismatch (expected {shape}, got {got}); "
                "please report this network"
            )
        self.steps.append(step)
        return _Dyn(key, got, lead)

    def _name(self) -> str:
        return self.node.name or self.node.op_type

    def _layout(self, v: _Dyn, lead: bool) -> _Dyn:
        """The same ONNX tensor, held with (``lead``) or without the batch in place of axis 0."""
        return self._reshape(v, v.shape, lead)

    def _reshape(self, v: _Dyn, shape: Sequence[int], lead: bool | None = None) -> _Dyn:
        """Per-sample reshape to the ONNX shape ``shape``, held with layout ``lead``.

        By default a leading 1 (of a shape with two or more axes) becomes the batch axis.
        """
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) != math.prod(v.shape):
            raise InputError(f"{self.node_where}: cannot reshape {list(v.shape)} to {list(shape)}")
        if lead is None:
            lead = len(shape) >= 2 and shape[0] == 1
        elif lead and (not shape or shape[0] != 1):
            self._unsupported(
                f"an operand of ONNX shape {list(shape)} would need batch axis 0 of size 1"
            )
        sample = shape[1:] if lead else shape
        if sample == v.sample:
            return _Dyn(v.key, shape, lead)
        return self._emit(M.Reshape(self._name(), sample), [v], shape, lead)

    def _spatial(self, v: _Dyn, attrs: dict, kernel: Sequence[int]) -> tuple:
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

    @staticmethod
    def _fpad(begin: Sequence[int], end: Sequence[int]) -> tuple[int, ...]:
        out: list[int] = []
        for b, e in zip(reversed(begin), reversed(end)):
            out += [int(b), int(e)]
        return tuple(out)

    def _image(self, x: _Value, dims: Sequence[int]) -> _Dyn:
        """``x`` as an [N=1, C, *spatial] tensor with the batch in place of N."""
        if not isinstance(x, _Dyn):
            self._unsupported("its data input must be computed from the network input")
        if len(x.shape) - 2 not in dims:
            self._unsupported(f"input of ONNX shape {list(x.shape)} (rank {len(x.shape)})")
        return self._layout(x, True)

    # ------------------------------------------------------------------ op handlers
    def activation(self, ins, attrs):
        kind = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "LeakyRelu": "leaky_relu"}
        x = ins[0]
        step = M.Activation(self._name(), kind[self.node.op_type], float(attrs.get("alpha", 0.01)))
        return [self._emit(step, [x], x.shape, x.lead)]

    def identity(self, ins, attrs):
        if self.node.op_type == "Dropout" and len(ins) > 2 and ins[2] is not None:
            if isinstance(ins[2], _Dyn) or bool(ins[2].array):
                self._unsupported("Dropout in training mode")
        return [ins[0]]

    def binary(self, ins, attrs, op_type: str | None = None):
        op_type = op_type or self.node.op_type
        op = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}[op_type]
        shapes = [v.shape if isinstance(v, _Dyn) else v.array.shape for v in ins]
        try:
            out = tuple(np.broadcast_shapes(*shapes))
        except ValueError as exc:
            raise InputError(f"{self.node_where}: shapes {shapes} do not broadcast") from exc
        lead = len(out) >= 2 and out[0] == 1
        dyn = []
        for v in ins:
            if isinstance(v, _Dyn):
                padded = (1,) * (len(out) - len(v.shape)) + v.shape
                v = self._reshape(v, padded, lead)
                dyn.append(v)
        if len(dyn) == 2:
            step = M.Binary(self._name(), op)
        else:
            const_first = isinstance(ins[0], _Const)
            const = ins[0] if const_first else ins[1]
            step = M.Binary(self._name(), op, self._tensor(const), const_first)
        return [self._emit(step, dyn, out, lead)]

    def gemm(self, ins, attrs):
        a, b = ins[0], ins[1]
        c = ins[2] if len(ins) > 2 else None
        if not isinstance(a, _Dyn) or not isinstance(b, _Const) or isinstance(c, _Dyn):
            self._unsupported("only A computed from the input, with constant B and C")
        if len(a.shape) != 2 or b.array.ndim != 2:
            raise InputError(f"{self.node_where}: Gemm needs 2-d A and B")
        if attrs.get("transA", 0):
            self._unsupported("transA=1 on the computed operand")
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        w = b.array if attrs.get("transB", 0) else b.array.T
        weight = self._tensor(_Const(alpha * w))
        n = weight.shape[0]
        bias = extra = None
        if c is not None:
            cb = beta * c.array
            if cb.ndim <= 1 or (cb.ndim == 2 and cb.shape[0] == 1):
                bias = self._tensor(_Const(np.broadcast_to(cb.reshape(-1), (n,)).copy()))
            else:  # a per-row bias: add it after the product
                extra = _Const(cb)
        y = self._emit(M.Linear(self._name(), weight, bias), [a], a.shape[:-1] + (n,), a.lead)
        return [y] if extra is None else self.binary([y, extra], {}, "Add")

    def matmul(self, ins, attrs):
        a, b = ins
        if isinstance(a, _Dyn) and isinstance(b, _Dyn):
            self._unsupported("MatMul of two tensors computed from the input")
        if isinstance(a, _Dyn):
            w = b.array
            if w.ndim == 1:
                y = self._emit(
                    M.Linear(self._name(), self._tensor(_Const(w[None, :])), None),
                    [self._layout(a, False) if len(a.shape) == 1 else a],
                    None,
                    a.lead and len(a.shape) > 1,
                )
                return [self._reshape(y, a.shape[:-1])]
            if w.ndim != 2:
                self._unsupported(f"a constant right operand of rank {w.ndim}")
            x = self._layout(a, False) if len(a.shape) == 1 else a
            weight = self._tensor(_Const(w.T))
            return [
                self._emit(
                    M.Linear(self._name(), weight, None), [x], x.shape[:-1] + (w.shape[1],), x.lead
                )
            ]
        w = a.array
        if w.ndim != 2 or len(b.shape) < 1:
            self._unsupported(f"a constant left operand of rank {w.ndim}")
        weight = self._tensor(_Const(w))
        if len(b.shape) == 1:
            x = self._layout(b, False)
            return [self._emit(M.Linear(self._name(), weight, None), [x], (w.shape[0],), False)]
        x = self._layout(b, False) if len(b.shape) == 2 else b
        out_shape = x.shape[:-2] + (w.shape[0], x.shape[-1])
        return [self._emit(M.Linear(self._name(), weight, None, left=True), [x], out_shape, x.lead)]

    def conv(self, ins, attrs):
        w, bias = ins[1], ins[2] if len(ins) > 2 else None
        if not isinstance(w, _Const) or isinstance(bias, _Dyn):
            self._unsupported("convolution weights and bias must be constants")
        x = self._image(ins[0], (1, 2))
        kernel = tuple(attrs.get("kernel_shape", w.array.shape[2:]))
        if len(kernel) != len(x.shape) - 2 or tuple(w.array.shape[2:]) != kernel:
            self._unsupported(f"kernel_shape {list(kernel)} vs weights {list(w.array.shape)}")
        stride, dilation, begin, end = self._spatial(x, attrs, kernel)
        pre_pad = None
        if begin != end:
            pre_pad, begin = self._fpad(begin, end), (0,) * len(kernel)
        step = M.Conv(
            self._name(),
            self._tensor(w),
            None if bias is None else self._tensor(bias),
            stride,
            tuple(begin),
            dilation,
            int(attrs.get("group", 1)),
            pre_pad,
        )
        return [self._emit(step, [x], None, True)]

    def pool(self, ins, attrs):
        kind = "max" if self.node.op_type == "MaxPool" else "avg"
        x = self._image(ins[0], (2,))
        kernel = tuple(attrs["kernel_shape"])
        stride, dilation, begin, end = self._spatial(x, attrs, kernel)
        if kind == "avg" and any(d != 1 for d in dilation):
            self._unsupported("AveragePool with dilations")
        ceil_mode = bool(attrs.get("ceil_mode", 0))
        include = bool(attrs.get("count_include_pad", 0))
        pre_pad = None
        fits = all(2 * p <= k for p, k in zip(begin, kernel))
        if begin != end or not fits:
            if kind == "max" or not include or ceil_mode:
                self._unsupported(f"{self.node.op_type} with pads {list(begin) + list(end)}")
            pre_pad, begin = self._fpad(begin, end), (0,) * len(kernel)
        if ceil_mode and any(p > 0 for p in begin):
            self._unsupported("ceil_mode together with padding")
        step = M.Pool(
            self._name(), kind, kernel, stride, tuple(begin), dilation, ceil_mode, include, pre_pad
        )
        return [self._emit(step, [x], None, True)]

    def global_pool(self, ins, attrs):
        x = self._image(ins[0], (2,))
        k = tuple(x.shape[2:])
        step = M.Pool(self._name(), "avg", k, k, (0, 0), (1, 1), False, False, None)
        return [self._emit(step, [x], x.shape[:2] + (1, 1), True)]

    def pad(self, ins, attrs):
        x = ins[0]
        mode = attrs.get("mode", "constant")
        if mode != "constant":
            self._unsupported(f"Pad mode {mode!r} (only 'constant')")
        rank = len(x.shape)
        if self.opset < 11:
            pads, value = list(attrs.get("pads", [])), float(attrs.get("value", 0.0))
            axes = list(range(rank))
        else:
            if any(isinstance(v, _Dyn) for v in ins[1:]):
                self._unsupported("pads, constant_value and axes must be constants")
            pads = [int(p) for p in ins[1].array.reshape(-1)]
            value = (
                float(ins[2].array.reshape(-1)[0]) if len(ins) > 2 and ins[2] is not None else 0.0
            )
            axes = list(range(rank))
            if len(ins) > 3 and ins[3] is not None:
                axes = [int(a) % rank for a in ins[3].array.reshape(-1)]
        n = len(axes)
        if len(pads) != 2 * n:
            raise InputError(f"{self.node_where}: {len(pads)} pads for {n} axes")
        begin, end = [0] * rank, [0] * rank
        for i, a in enumerate(axes):
            begin[a], end[a] = pads[i], pads[i + n]
        if not any(begin) and not any(end):
            return [x]
        lead = rank >= 2 and x.shape[0] == 1 and begin[0] == 0 and end[0] == 0
        x = self._layout(x, lead)
        first = 1 if lead else 0
        fpad = self._fpad(begin[first:], end[first:])
        out_shape = tuple(s + b + e for s, b, e in zip(x.shape, begin, end))
        return [self._emit(M.Pad(self._name(), fpad, value), [x], out_shape, lead)]

    def batchnorm(self, ins, attrs):
        if attrs.get("training_mode", 0) or attrs.get("spatial", 1) != 1:
            self._unsupported("BatchNormalization in training mode or with spatial=0")
        if any(not isinstance(v, _Const) for v in ins[1:5]):
            self._unsupported("scale, bias, mean and var must be constants")
        x = ins[0]
        if not isinstance(x, _Dyn) or len(x.shape) < 2:
            self._unsupported("input of rank < 2")
        x = self._layout(x, True)
        scale, bias, mean, var = (self._tensor(v) for v in ins[1:5])
        step = M.BatchNorm(self._name(), scale, bias, mean, var, float(attrs.get("epsilon", 1e-5)))
        return [self._emit(step, [x], x.shape, True)]

    def flatten(self, ins, attrs):
        x = ins[0]
        axis = int(attrs.get("axis", 1))
        axis = axis + len(x.shape) if axis < 0 else axis
        shape = (math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
        return [self._reshape(x, shape)]

    def reshape(self, ins, attrs):
        x = ins[0]
        if self.opset < 5:
            target = list(attrs["shape"])
        else:
            if not isinstance(ins[1], _Const):
                self._unsupported("the target shape must be a constant")
            target = [int(s) for s in ins[1].array.reshape(-1)]
        allowzero = int(attrs.get("allowzero", 0))
        target = [x.shape[i] if (s == 0 and not allowzero) else s for i, s in enumerate(target)]
        if target.count(-1) > 1:
            raise InputError(f"{self.node_where}: target shape {target} has several -1")
        if -1 in target:
            known = math.prod(s for s in target if s != -1)
            target[target.index(-1)] = math.prod(x.shape) // known if known else 0
        return [self._reshape(x, target)]

    def squeeze(self, ins, attrs):
        x = ins[0]
        axes = self._axes(ins, attrs)
        rank = len(x.shape)
        if axes is None:
            axes = [i for i, s in enumerate(x.shape) if s == 1]
        axes = {a % rank for a in axes}
        return [self._reshape(x, [s for i, s in enumerate(x.shape) if i not in axes])]

    def unsqueeze(self, ins, attrs):
        x = ins[0]
        axes = self._axes(ins, attrs)
        rank = len(x.shape) + len(axes)
        axes = {a % rank for a in axes}
        it = iter(x.shape)
        return [self._reshape(x, [1 if i in axes else next(it) for i in range(rank)])]

    def _axes(self, ins, attrs):
        if "axes" in attrs:
            return list(attrs["axes"])
        if len(ins) > 1 and ins[1] is not None:
            if not isinstance(ins[1], _Const):
                self._unsupported("axes must be a constant")
            return [int(a) for a in ins[1].array.reshape(-1)]
        return None

    def transpose(self, ins, attrs):
        x = ins[0]
        rank = len(x.shape)
        perm = [int(p) for p in attrs.get("perm", range(rank - 1, -1, -1))]
        if perm == list(range(rank)):
            return [x]
        out_shape = tuple(x.shape[p] for p in perm)
        lead = rank >= 2 and perm[0] == 0 and x.shape[0] == 1
        x = self._layout(x, lead)
        torch_perm = tuple(perm) if lead else (0,) + tuple(p + 1 for p in perm)
        return [self._emit(M.Permute(self._name(), torch_perm), [x], out_shape, lead)]

    def concat(self, ins, attrs):
        if any(not isinstance(v, _Dyn) for v in ins):
            self._unsupported("Concat with a constant operand")
        rank = len(ins[0].shape)
        axis = int(attrs["axis"]) % rank
        lead = rank >= 2 and axis != 0 and all(v.shape[0] == 1 for v in ins)
        xs = [self._layout(v, lead) for v in ins]
        dim = axis if lead else axis + 1
        out_shape = list(xs[0].shape)
        out_shape[axis] = sum(v.shape[axis] for v in xs)
        return [self._emit(M.Concat(self._name(), dim), xs, tuple(out_shape), lead)]


_HANDLERS = {
    "Relu": _Converter.activation,
    "Sigmoid": _Converter.activation,
    "Tanh": _Converter.activation,
    "LeakyRelu": _Converter.activation,
    "Identity": _Converter.identity,
    "Dropout": _Converter.identity,
    "Add": _Converter.binary,
    "Sub": _Converter.binary,
    "Mul": _Converter.binary,
    "Div": _Converter.binary,
    "Gemm": _Converter.gemm,
    "MatMul": _Converter.matmul,
    "Conv": _Converter.conv,
    "AveragePool": _Converter.pool,
    "MaxPool": _Converter.pool,
    "GlobalAveragePool": _Converter.global_pool,
    "Pad": _Converter.pad,
    "BatchNormalization": _Converter.batchnorm,
    "Flatten": _Converter.flatten,
    "Reshape": _Converter.reshape,
    "Squeeze": _Converter.squeeze,
    "Unsqueeze": _Converter.unsqueeze,
    "Transpose": _Converter.transpose,
    "Concat": _Converter.concat,
}

#: ONNX op types :func:`load_onnx` converts on tensors computed from the input. ``Constant`` and
#: ``Shape`` are always fine; any other op is accepted when all its inputs are constants (folded).
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted([*_HANDLERS, "Constant", "Shape"]))
