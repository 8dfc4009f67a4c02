"""lipbound's own immutable computation graph.

A :class:`Graph` is a tuple of :class:`Node` in topological order. Every node computes one
registered operator (``Node.op`` is a key of :mod:`lipbound.ops.registry`) from the values of its
``inputs``; ``shape`` is the per-sample shape (no batch dimension). Node kinds with no operator:

- ``"input"``: the perturbed input x (exactly one per graph);
- ``"const"``: a constant value ``params["value"]`` of shape ``[1 or B, *shape]`` that does not
  depend on x (a batch of spec vectors in Jacobian graphs, for instance).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import networkx as nx
import torch

INPUT = "input"
CONST = "const"


def freeze(params: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """Read-only view of a parameter mapping (tensors inside are shared, never mutated)."""
    return MappingProxyType(dict(params or {}))


@dataclass(frozen=True)
class Node:
    """One operation: ``name = op(*inputs; params)`` with per-sample output ``shape``.

    ``where`` says where the node came from in the user's model (module path or source line),
    for error messages.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    params: Mapping[str, Any] = field(default_factory=lambda: freeze(None))
    where: str = ""

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class Graph:
    """An immutable DAG of nodes in topological order with one input and one output node."""

    nodes: tuple[Node, ...]
    input: str
    output: str

    def __post_init__(self) -> None:
        index = {n.name: i for i, n in enumerate(self.nodes)}
        if len(index) != len(self.nodes):
            raise ValueError("duplicate node names in graph")
        for i, n in enumerate(self.nodes):
            for src in n.inputs:
                if index.get(src, i) >= i:
                    raise ValueError(f"graph is not in topological order at node {n.name!r}")
        object.__setattr__(self, "_index", index)

    def __getitem__(self, name: str) -> Node:
        return self.nodes[self._index[name]]  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __contains__(self, name: str) -> bool:
        return name in self._index  # type: ignore[attr-defined]

    def position(self, name: str) -> int:
        return self._index[name]  # type: ignore[attr-defined]

    def to_networkx(self) -> nx.DiGraph:
        """The graph as a networkx DiGraph (node attribute ``op``) for analysis and DOT export."""
        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.name, op=n.op, shape=n.shape)
            for src in n.inputs:
                g.add_edge(src, n.name)
        return g

    def consumers(self) -> dict[str, list[str]]:
        """Map from node name to the names of the nodes that read it."""
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for src in n.inputs:
                out[src].append(n.name)
        return out

    def ancestors(self, name: str) -> set[str]:
        """Names of all nodes ``name`` depends on (excluding itself)."""
        return nx.ancestors(self.to_networkx(), name)

    def depends_on_input(self) -> dict[str, bool]:
        """For every node, whether its value depends on the perturbed input."""
        dep: dict[str, bool] = {}
        for n in self.nodes:
            dep[n.name] = n.op == INPUT or any(dep[s] for s in n.inputs)
        return dep

    def to_dot(self) -> str:
        """Graphviz DOT text of the graph."""
        lines = ["digraph lipbound {"]
        for n in self.nodes:
            lines.append(f'  "{n.name}" [label="{n.name}\\n{n.op} {list(n.shape)}"];')
            lines.extend(f'  "{s}" -> "{n.name}";' for s in n.inputs)
        lines.append("}")
        return "\n".join(lines)


def graph_to(graph: Graph, dtype: Any = None, device: Any = None) -> Graph:
    """A copy of the graph with every floating-point tensor parameter cast/moved (those of
    nested parameter mappings too, e.g. a transpose's ``inner_params``)."""
    def conv(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.to(device=device, dtype=dtype if v.is_floating_point() else None)
        if isinstance(v, Mapping):
            return freeze({k: conv(x) for k, x in v.items()})
        return v

    nodes = tuple(Node(n.name, n.op, n.inputs, n.shape,
                       freeze({k: conv(v) for k, v in n.params.items()}), n.where)
                  for n in graph.nodes)
    return Graph(nodes, graph.input, graph.output)
