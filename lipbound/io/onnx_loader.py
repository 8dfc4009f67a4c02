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

This module holds the public entry points and the walk over the nodes (with the helpers the
per-op converters call); the pieces: :mod:`lipbound.io._onnx_graph` (reading the file, the value
kinds), :mod:`lipbound.io._onnx_ops` and :mod:`lipbound.io._onnx_shape_ops` (one converter per op
type), :mod:`lipbound.io._onnx_modules` (the torch steps they emit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lipbound.errors import InputError, ShapeError, UnsupportedOperationError
from lipbound.io import _onnx_modules as M
from lipbound.io._onnx_graph import (
    FLOAT_TYPES,
    Const,
    Dyn,
    Value,
    graph_input,
    inferred_shapes,
    node_attributes,
    read_model,
)
from lipbound.io._onnx_ops import HANDLERS, SUPPORTED_OPS

__all__ = ["SUPPORTED_OPS", "load_onnx", "onnx_input_shape"]


def onnx_input_shape(path: str | Path) -> tuple:
    """The input shape the ONNX file declares (symbolic axes as their names, unknown as ``"?"``)."""
    model = read_model(path)
    return graph_input(model, path)[1]


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
    model = read_model(path)
    return _Converter(model, str(path), input_shape).convert().eval()


class _Converter:
    """One conversion: walks the nodes in order and keeps, per ONNX tensor name, its value.

    The walk (:meth:`convert`) folds constant nodes and hands every other node to its per-op
    converter (:data:`~lipbound.io._onnx_ops.HANDLERS`), which uses the public helpers below
    (:meth:`emit`, :meth:`reshape`, :meth:`layout`, :meth:`tensor`, :meth:`unsupported`).
    """

    def __init__(self, model, source: str, input_shape: Sequence[int] | None) -> None:
        self.model = model
        self.graph = model.graph
        self.source = source
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13
        )
        self.values: dict[str, Value] = {}
        self.steps: list[M.Step] = []
        self.examples: dict[str, torch.Tensor] = {}
        self.user_input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.node = None  # the node being converted
        self.node_where = ""

    # ------------------------------------------------------------------ the walk
    def convert(self) -> M.OnnxModel:
        from onnx import numpy_helper

        for t in self.graph.initializer:
            self.values[t.name] = Const(numpy_helper.to_array(t))
        inp, declared = graph_input(self.model, self.source)
        dtype = FLOAT_TYPES.get(inp.type.tensor_type.elem_type)
        if dtype is None:
            raise InputError(
                f"{self.source}: input {inp.name!r} has ONNX element type "
                f"{inp.type.tensor_type.elem_type}; lipbound needs a floating-point input"
            )
        self.dtype = dtype
        x = self._input_value(inp.name, declared)
        self.values[inp.name] = x

        inferred = inferred_shapes(self.model)
        for index, node in enumerate(self.graph.node):
            self.node = node
            label = f"node {node.name!r}" if node.name else f"unnamed node #{index}"
            self.node_where = f"ONNX {label} (outputs {list(node.output)}) of {self.source}"
            outs = self._convert_node(node, self._node_inputs(node))
            self._store_outputs(node, outs, inferred)
        return self._model(declared)

    def _node_inputs(self, node) -> list[Value | None]:
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
        return ins

    def _convert_node(self, node, ins: list[Value | None]) -> list[Value]:
        """The node's output values: folded, a Shape of a computed tensor, or converted."""
        if node.op_type == "Shape" and isinstance(ins[0], Dyn):
            return [self._shape_of(ins[0])]
        if node.domain in ("", "ai.onnx") and all(v is None or isinstance(v, Const) for v in ins):
            return self._fold(node, ins)
        if node.domain not in ("", "ai.onnx") or node.op_type not in HANDLERS:
            raise UnsupportedOperationError(
                node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}",
                self.node_where,
                SUPPORTED_OPS,
            )
        outs = HANDLERS[node.op_type](self, ins, node_attributes(node))
        used = [o for o in node.output[1:] if o]
        if len(outs) == 1 and used and any(self._is_consumed(o) for o in used):
            self.unsupported(f"its extra outputs {used} are used; only the first is supported")
        return outs

    def _store_outputs(self, node, outs: list[Value], inferred: dict) -> None:
        for name, value in zip(node.output, outs):
            if not name:
                continue
            if isinstance(value, Dyn) and inferred.get(name, value.shape) != value.shape:
                self.unsupported(
                    f"ONNX shape inference gives output {name!r} the shape "
                    f"{list(inferred[name])}, the conversion {list(value.shape)}"
                )
            self.values[name] = value

    def _model(self, declared: tuple) -> M.OnnxModel:
        """The converted module, its output flattened to ``[B, K]``."""
        if len(self.graph.output) != 1:
            raise InputError(
                f"{self.source}: lipbound needs a network with one output, this one has "
                f"{len(self.graph.output)}: {[o.name for o in self.graph.output]}"
            )
        out = self.values.get(self.graph.output[0].name)
        if not isinstance(out, Dyn):
            raise InputError(f"{self.source}: the output does not depend on the input")
        size = math.prod(out.sample)
        if len(out.sample) != 1:
            out = self.emit(M.Reshape("<output>", (size,)), [out], (size,), lead=False)
        return M.OnnxModel(
            self.steps, "input", out.key, self.input_shape, size, declared, self.source
        )

    def _input_value(self, name: str, declared: tuple) -> Dyn:
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
            return Dyn("input", shape, lead)
        x = Dyn("input", self.input_shape, False)
        return self.emit(M.Reshape("<input>", sample), [x], shape, lead)

    def _is_consumed(self, name: str) -> bool:
        return any(name in n.input for n in self.graph.node) or any(
            o.name == name for o in self.graph.output
        )

    def _fold(self, node, ins: list) -> list[Value]:
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
        return [Const(np.asarray(r)) for r in results]

    def _shape_of(self, v: Dyn) -> Const:
        attrs = node_attributes(self.node)
        shape = np.array(v.shape, dtype=np.int64)
        return Const(shape[attrs.get("start", 0) : attrs.get("end", len(shape))])

    # ------------------------------------------------------------------ for the per-op converters
    def unsupported(self, hint: str):
        raise UnsupportedOperationError(
            self.node.op_type, self.node_where, SUPPORTED_OPS, hint=f"Not supported here: {hint}."
        )

    def tensor(self, c: Const) -> torch.Tensor:
        a = c.array
        if np.issubdtype(a.dtype, np.floating):
            return torch.from_numpy(np.ascontiguousarray(a).copy())
        return torch.from_numpy(np.ascontiguousarray(a).astype(np.float64)).to(self.dtype)

    def emit(self, step: M.Step, ins: list[Dyn], shape: tuple | None, lead: bool) -> Dyn:
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
        return Dyn(key, got, lead)

    def step_name(self) -> str:
        return self.node.name or self.node.op_type

    def layout(self, v: Dyn, lead: bool) -> Dyn:
        """The same ONNX tensor, held with (``lead``) or without the batch in place of axis 0."""
        return self.reshape(v, v.shape, lead)

    def reshape(self, v: Dyn, shape: Sequence[int], lead: bool | None = None) -> Dyn:
        """Per-sample reshape to the ONNX shape ``shape``, held with layout ``lead``.

        By default a leading 1 (of a shape with two or more axes) becomes the batch axis.
        """
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) != math.prod(v.shape):
            raise InputError(f"{self.node_where}: cannot reshape {list(v.shape)} to {list(shape)}")
        if lead is None:
            lead = len(shape) >= 2 and shape[0] == 1
        elif lead and (not shape or shape[0] != 1):
            self.unsupported(
                f"an operand of ONNX shape {list(shape)} would need batch axis 0 of size 1"
            )
        sample = shape[1:] if lead else shape
        if sample == v.sample:
            return Dyn(v.key, shape, lead)
        return self.emit(M.Reshape(self.step_name(), sample), [v], shape, lead)
