"""Read a ReLU / LeakyReLU MLP off lipbound's traced graph (any model that traces to a chain).

The normalised graph of a model the exact solvers accept is a chain

    input -> [reshape to 1-D] -> affine ... -> relu | leaky_relu -> affine ... -> output

where "affine" is ``linear``, 1-D ``scale_shift``, ``identity`` or a reshape to 1-D (C order, as
``MLP.flat_input``); consecutive affine nodes are composed into one layer.  Anything else
raises UnsupportedModelError naming the operator and where it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lipbound.errors import UnsupportedModelError
from lipbound.exact.mlp import MLP
from lipbound.graph.ir import INPUT, Graph
from lipbound.ops.smooth import ACTIVATIONS

EXACT_ACTIVATIONS = ("relu", "leaky_relu")
_OTHER_METHODS = "'naive', 'ibp', 'crown', 'alpha-crown' (and 'bab' where available)"


@dataclass(frozen=True)
class GraphMLP:
    """The MLP and, per hidden layer, the graph node holding its pre-activation z_i."""

    mlp: MLP
    preact_nodes: tuple[str, ...]


def _np(t) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy().copy()


def _unsupported(node, method: str = "method 'exact'",
                 alternatives: str = f"methods {_OTHER_METHODS}") -> UnsupportedModelError:
    if node.op in ACTIVATIONS:
        return UnsupportedModelError(
            f"{method} supports ReLU and LeakyReLU networks only; the model uses "
            f"{node.op!r} at {node.where}. Use {alternatives} for {node.op}."
        )
    return UnsupportedModelError(
        f"{method} needs a fully connected ReLU/LeakyReLU chain (linear, relu, "
        f"leaky_relu, flatten); operator {node.op!r} at {node.where} is not part of one. "
        f"Use {alternatives}."
    )


def _affine_of(node, n_in: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(W, b) of an affine node acting on a flat vector of length n_in, or None if it is not."""
    if node.op == "linear":
        w = _np(node.params["weight"])
        b = node.params.get("bias")
        return w, (_np(b).reshape(-1) if b is not None else np.zeros(w.shape[0]))
    if node.op == "identity" or (node.op == "reshape" and node.shape == (n_in,)):
        return np.eye(n_in), np.zeros(n_in)
    if node.op == "scale_shift" and len(node.shape) == 1:
        scale = np.broadcast_to(_np(node.params["scale"]).reshape(-1), (n_in,))
        shift = node.params.get("shift")
        b = np.zeros(n_in) if shift is None else np.broadcast_to(_np(shift).reshape(-1), (n_in,))
        return np.diag(scale), np.array(b, dtype=np.float64)
    return None


def mlp_from_graph(graph: Graph, method: str = "method 'exact'",
                   alternatives: str = f"methods {_OTHER_METHODS}") -> GraphMLP:
    """The :class:`MLP` computing the same function as ``graph`` (UnsupportedModelError if the
    graph is not a ReLU/LeakyReLU chain; the message names the operator, ``method`` and the
    ``alternatives`` to use instead)."""
    nodes = [n for n in graph.nodes if n.op != INPUT]
    first = graph[graph.input]
    n_cur = int(np.prod(first.shape)) if first.shape else 1
    prev = graph.input
    weights, biases, slopes, pre_nodes = [], [], [], []
    W, b = np.eye(n_cur), np.zeros(n_cur)  # pending affine map since the last activation
    pending = False
    for node in nodes:
        if node.inputs != (prev,):
            raise _unsupported(node, method, alternatives)
        if node.op in EXACT_ACTIVATIONS:
            if not pending:
                raise _unsupported(node, method, alternatives)
            weights.append(W)
            biases.append(b)
            slopes.append(float(node.params.get("negative_slope", 0.0))
                          if node.op == "leaky_relu" else 0.0)
            pre_nodes.append(prev)
            W, b, pending = np.eye(W.shape[0]), np.zeros(W.shape[0]), False
        else:
            aff = _affine_of(node, W.shape[0])
            if aff is None or aff[0].shape[1] != W.shape[0]:
                raise _unsupported(node, method, alternatives)
            W, b = aff[0] @ W, aff[0] @ b + aff[1]
            pending = pending or node.op == "linear" or node.op == "scale_shift"
        prev = node.name
    if prev != graph.output:
        raise UnsupportedModelError("the graph's output is not the end of its layer chain")
    weights.append(W)
    biases.append(b)
    return GraphMLP(MLP(tuple(weights), tuple(biases), tuple(slopes)), tuple(pre_nodes))
