"""The conversion state of the tracer (:mod:`lipbound.graph.aten`): :class:`Builder`, the
lipbound nodes made so far and the values of the exported graph's names. Op converters
(:mod:`lipbound.ops.tracing`) add nodes through it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lipbound.errors import TracingError
from lipbound.graph.ir import INPUT, Graph, Node, freeze
from lipbound.ops.tracing import Var, per_sample_shape, where_of

__all__ = ["Builder", "Var", "per_sample_shape", "where_of"]


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
