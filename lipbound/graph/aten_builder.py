"""The conversion state of the ATen table (:mod:`lipbound.graph.aten`) and the helpers its
handlers share: :class:`Var` (an input-dependent value), :class:`Builder` (the lipbound nodes
made so far), per-sample shapes, explicit broadcasts, per-sample reduction dims and the
unsupported-operator error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lipbound.errors import TracingError, UnsupportedOperationError
from lipbound.graph.ir import INPUT, Graph, Node, freeze

#: the ATen names the table supports, for error messages (filled by :mod:`lipbound.graph.aten`)
SUPPORTED: list[str] = []


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


def _one(c: Tensor) -> Tensor:
    return torch.ones((), dtype=c.dtype)


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
