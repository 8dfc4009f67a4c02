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

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from lipbound.errors import UnsupportedModelError
from lipbound.graph.ir import CONST, INPUT, Graph, Node
from lipbound.ops import registry

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


def sign_only_nodes(graph: Graph, names: Iterable[str], targets: Iterable[str] = ()
                    ) -> set[str]:
    """Those of ``names`` whose bounds, for unoptimised relaxations and the bounds of
    ``targets``, matter only through the sign status of their elements (strictly positive,
    strictly negative or neither): every nonlinear op reading the node either declares that
    (:meth:`~lipbound.ops.base.Op.sign_only`) or has no descendant whose bounds a relaxation
    reads or that is a target (its own relaxation then bounds nothing that is used); a
    linear op reading it has no such descendant either. The forward pre-activation of a
    network's last ReLU layer, in the Clarke-Jacobian graph under CROWN, is the typical
    case."""
    need = set(nodes_needing_bounds(graph)) | set(targets)
    users = graph.consumers()
    below: dict[str, bool] = {}  # does a node needing bounds descend from the node?
    for n in reversed(graph.nodes):
        below[n.name] = any(u in need or below[u] for u in users[n.name])
    out = set()
    for name in names:
        ok = True
        for u in users[name]:
            node = graph[u]
            op = registry.get(node.op, node.where)
            if op.linear:
                ok = ok and not below[u] and u not in need
                continue
            ok = ok and (all(op.sign_only(node.params, i) for i, s in enumerate(node.inputs)
                             if s == name) or not (u in need or below[u]))
        if ok:
            out.add(name)
    return out


def relu_like_slope(node: Node) -> float | None:
    """The negative slope k of a node whose op is ``max(x, k x)`` (ReLU-like: the op says so,
    :meth:`~lipbound.ops.base.Op.relu_like_slope`), else None."""
    if node.op in (INPUT, CONST):
        return None
    return registry.get(node.op, node.where).relu_like_slope(node.params)


def relu_like_only(graph: Graph) -> bool:
    """True when every nonlinear op of the graph is ReLU-like (cheap to optimise)."""
    return all(registry.get(n.op, n.where).linear or relu_like_slope(n) is not None
               for n in graph.nodes if n.op not in (INPUT, CONST))


def relu_inputs(graph: Graph) -> list[str]:
    """The input-dependent nodes that ReLU-like nodes read (the pre-activations a sign
    search splits), in topological order; UnsupportedModelError when there are none."""
    dep = graph.depends_on_input()
    names = {n.inputs[0] for n in graph.nodes
             if relu_like_slope(n) is not None and dep[n.inputs[0]]}
    if not names:
        other = [f"{n.op!r} at {n.where}" for n in graph.nodes if dep[n.name]
                 and n.op != INPUT and not registry.get(n.op, n.where).linear]
        raise UnsupportedModelError(
            "split='relu' needs ReLU-like or piecewise-linear activations (ops with kinks) "
            "that depend on the input; this "
            f"model has none (nonlinear operators: {', '.join(other) or 'none'}). Use "
            "split='input' or methods 'crown' / 'alpha-crown'.")
    return sorted(names, key=graph.position)


@dataclass(frozen=True)
class SplitPoint:
    """Where a branch-and-bound search may split the elements of a node: at ``point`` (a kink
    of an op reading ``node``, :meth:`~lipbound.ops.base.Op.kinks`), into ``node <= point``
    and ``node >= point``. ``sign``: a ReLU-like op reads the node and the point is 0 (a sign
    split: beta multipliers and the switch's one-sided derivative); otherwise the split is a
    box on the node (:attr:`~lipbound.bounds.restriction.Restriction.boxes`)."""

    node: str
    point: float
    sign: bool


def split_points(graph: Graph) -> list[SplitPoint]:
    """Every (input-dependent node, kink) pair of the ops with kinks (ReLU-likes at 0,
    hardtanh / clamp / relu6 / hardsigmoid at their limits, |.| at 0, hardswish at -3 and 3),
    in topological order, then by point; UnsupportedModelError when there are none."""
    dep = graph.depends_on_input()
    found: dict[tuple[str, float], bool] = {}
    for n in graph.nodes:
        if n.op in (INPUT, CONST) or len(n.inputs) != 1 or not dep[n.inputs[0]]:
            continue
        relu = relu_like_slope(n) is not None
        for t in registry.get(n.op, n.where).kinks(n.params):
            key = (n.inputs[0], float(t))
            found[key] = found.get(key, False) or (relu and t == 0.0)
    if not found:
        relu_inputs(graph)  # raises the error naming the model's nonlinear operators
    return sorted((SplitPoint(z, t, s) for (z, t), s in found.items()),
                  key=lambda sp: (graph.position(sp.node), sp.point))


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
    op = registry.get(node.op, node.where)
    if not op.linear and relu_like_slope(node) is None and len(node.inputs) == 1:
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
    """(W, b) of an affine node acting on a flat vector of length n_in (the op's
    :meth:`~lipbound.ops.base.LinearOp.flat_affine`), or None if it is not one."""
    op = registry.get(node.op, node.where)
    aff = op.flat_affine(node.params, n_in, node.shape) if op.linear else None
    return None if aff is None else (_np(aff[0]), _np(aff[1]))


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
        k = relu_like_slope(node)
        if k is not None:
            if not pending:
                raise _unsupported(node, method, alternatives)
            weights.append(W)
            biases.append(b)
            slopes.append(float(k))
            pre_nodes.append(prev)
            W, b, pending = np.eye(W.shape[0]), np.zeros(W.shape[0]), False
        else:
            aff = _affine_of(node, W.shape[0])
            if aff is None or aff[0].shape[1] != W.shape[0]:
                raise _unsupported(node, method, alternatives)
            W, b = aff[0] @ W, aff[0] @ b + aff[1]
            # a layer has begun once a map that is not a mere copy (reshape) is seen
            pending = pending or not registry.get(node.op).norm_fact(node.params, 0).copy
        prev = node.name
    if prev != graph.output:
        raise UnsupportedModelError("the graph's output is not the end of its layer chain")
    weights.append(W)
    biases.append(b)
    return ReluChain(tuple(weights), tuple(biases), tuple(slopes), tuple(pre_nodes))
