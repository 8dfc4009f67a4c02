"""Shape queries on a traced graph: which nodes feed a nonlinear or a splittable op, whether
every nonlinearity is ReLU-like, and whether the graph is a ReLU / LeakyReLU chain (an MLP).

A ReLU / LeakyReLU chain is a graph whose normalised form is

    input -> [reshape to 1-D] -> affine ... -> relu | leaky_relu -> affine ... -> output

where "affine" is ``linear``, 1-D ``scale_shift``, ``identity`` or a reshape to 1-D (C order);
consecutive affine nodes are composed into one layer. :func:`relu_chain` reads its layers in
float64 (the exact solvers' :class:`lipbound.exact.mlp.MLP` and branch-and-bound's LP layers
are built from them); anything else raises UnsupportedModelError naming the operator and
where it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lipbound.errors import UnsupportedModelError
from lipbound.graph.ir import CONST, INPUT, Graph
from lipbound.ops import registry
from lipbound.ops.smooth import ACTIVATIONS

#: the operators whose inputs a sign search splits (and the exact solvers' activations)
SPLIT_OPS = ("relu", "leaky_relu")
OTHER_METHODS = "'naive', 'ibp', 'crown', 'alpha-crown' (and 'bab' where available)"


def nodes_needing_bounds(graph: Graph) -> list[str]:
    """Input-dependent nodes read by a nonlinear op, in topological order."""
    dep = graph.depends_on_input()
    need: set[str] = set()
    for n in graph.nodes:
        if n.op in (INPUT, CONST):
            continue
        if not registry.get(n.op, n.where).linear:
            need.update(s for s in n.inputs if dep[s])
    return [n.name for n in graph.nodes if n.name in need]


def relu_like_only(graph: Graph) -> bool:
    """True when every nonlinear op of the graph is ReLU-like (cheap to optimise)."""
    return all(registry.get(n.op, n.where).linear or n.op in ("relu", "leaky_relu")
               for n in graph.nodes if n.op not in ("input", "const"))


def relu_inputs(graph: Graph) -> list[str]:
    """The input-dependent nodes that ReLU / LeakyReLU nodes read (the pre-activations a sign
    search splits), in topological order; UnsupportedModelError when there are none."""
    dep = graph.depends_on_input()
    names = {n.inputs[0] for n in graph.nodes if n.op in SPLIT_OPS and dep[n.inputs[0]]}
    if not names:
        other = [f"{n.op!r} at {n.where}" for n in graph.nodes if dep[n.name]
                 and n.op != INPUT and not registry.get(n.op, n.where).linear]
        raise UnsupportedModelError(
            "split='relu' needs ReLU or LeakyReLU activations that depend on the input; this "
            f"model has none (nonlinear operators: {', '.join(other) or 'none'}). Use "
            "split='input' or methods 'crown' / 'alpha-crown'.")
    return sorted(names, key=graph.position)


@dataclass(frozen=True)
class ReluChain:
    """The affine layers ``z_{i+1} = W_i a_i + b_i`` of a ReLU / LeakyReLU chain (float64),
    the negative slope of the activation after each hidden layer (0.0 is ReLU) and, per hidden
    layer, the graph node holding its pre-activation."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    negative_slopes: tuple[float, ...]
    preact_nodes: tuple[str, ...]


def _np(t) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy().copy()


def _unsupported(node, method: str = "method 'exact'",
                 alternatives: str = f"methods {OTHER_METHODS}") -> UnsupportedModelError:
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


def relu_chain(graph: Graph, method: str = "method 'exact'",
               alternatives: str = f"methods {OTHER_METHODS}") -> ReluChain:
    """The layers of ``graph`` read as a ReLU/LeakyReLU MLP (UnsupportedModelError if the
    graph is not such a chain; the message names the operator, ``method`` and the
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
        if node.op in SPLIT_OPS:
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
    return ReluChain(tuple(weights), tuple(biases), tuple(slopes), tuple(pre_nodes))
