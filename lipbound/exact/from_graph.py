"""Read a ReLU / LeakyReLU MLP off lipbound's traced graph (any model that traces to a chain;
the chain itself is read by :func:`lipbound.graph.shapes.relu_chain`)."""

from __future__ import annotations

from dataclasses import dataclass

from lipbound.exact.mlp import MLP
from lipbound.graph.ir import Graph
from lipbound.graph.shapes import OTHER_METHODS, relu_chain


@dataclass(frozen=True)
class GraphMLP:
    """The MLP and, per hidden layer, the graph node holding its pre-activation z_i."""

    mlp: MLP
    preact_nodes: tuple[str, ...]


def mlp_from_graph(graph: Graph, method: str = "method 'exact'",
                   alternatives: str = f"methods {OTHER_METHODS}") -> GraphMLP:
    """The :class:`MLP` computing the same function as ``graph`` (UnsupportedModelError if the
    graph is not a ReLU/LeakyReLU chain; the message names the operator, ``method`` and the
    ``alternatives`` to use instead)."""
    chain = relu_chain(graph, method, alternatives)
    return GraphMLP(MLP(chain.weights, chain.biases, chain.negative_slopes), chain.preact_nodes)
