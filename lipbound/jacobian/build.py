"""Derive the Clarke-Jacobian graph of a forward graph.

Given a forward graph f: x -> y [K] and spec rows C [S, K], the joint graph computes, for every
row s (batched as the batch dimension), the chain-rule gradient ``g = J_f(x)^T C_s`` [*in]:

- the cotangent of the output is the constant ``C_s`` (a ``const`` node of batch S);
- fan-in adds cotangents (``add``); every op states how its cotangent a reaches each input
  (:meth:`~lipbound.ops.base.Op.jacobian_rule`, :mod:`lipbound.ops.facts`), one of:
- ``transpose`` (every linear op: conv -> conv_transpose, reshapes, pooling and padding ->
  their adjoints);
- a gate ``kind(z, a)`` reading the forward input z (ReLU / LeakyReLU -> ``relu_switch`` /
  ``leaky_switch``, max pooling -> ``max_pool_grad``, max over dims -> ``reduce_max_grad``);
- the chain rule ``mul(d(z), a)`` with the op's derivative stated as a registered op on the
  same input (:meth:`~lipbound.ops.base.NonlinearOp.derivative`: ``d_tanh`` and the like for
  smooth activations, a step function ``pwl`` for piecewise-linear ops, |.| and hardswish,
  ``pow`` for log and powers, ``2 z`` for squares, the op's own output for exp);
- the product rule of ``mul(x, y)``: ``mul(y, a)`` to x and ``mul(x, a)`` to y.

The set of values g can take at x contains every Clarke generalised gradient of C_s . f at x
(the chain rule with set-valued derivatives is a superset of the Clarke Jacobian).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import Tensor

from lipbound.errors import UnsupportedOperationError
from lipbound.graph.ir import CONST, INPUT, Graph, Node, freeze
from lipbound.ops import registry
from lipbound.ops.facts import CHAIN, GATE, PRODUCT, TRANSPOSE

SPEC = "jac_spec"


@dataclass(frozen=True)
class JacobianGraph:
    """The joint forward + backward graph; ``gradient`` names the node g [*in], ``norm``
    the node sum_j |g_j| (q = 1) or sum_j g_j^2 (q = 2), or None, and ``cotangents`` maps
    each input-dependent forward node that the output depends on to the node holding the
    cotangent of its output (what its Jacobian rule reads: a ReLU's switch multiplies it)."""

    graph: Graph
    gradient: str
    norm: str | None = None
    cotangents: Mapping[str, str] = field(default_factory=dict)


def _backward_node(fwd: Node, idx: int, forward: Graph, g: str, nodes: list[Node]) -> str:
    """Append the node(s) that map the cotangent g of ``fwd`` to its input ``src``, by the
    op's :meth:`~lipbound.ops.base.Op.jacobian_rule`."""
    name = f"grad_{fwd.name}_{idx}"
    src = forward[fwd.inputs[idx]]
    op = registry.get(fwd.op, fwd.where)
    rule = op.jacobian_rule(fwd.params, idx)
    if rule is None or (rule.form == CHAIN and len(fwd.inputs) != 1):
        supported = [k for k in registry.kinds() if registry.get(k).differentiable]
        raise UnsupportedOperationError(fwd.op, fwd.where, supported,
                                        hint=op.no_jacobian_reason
                                        or "No Clarke-Jacobian rule for this operator.")
    if rule.form == TRANSPOSE:
        params = {"inner": fwd.op, "inner_params": fwd.params, "index": idx,
                  "in_shapes": tuple(forward[s].shape for s in fwd.inputs)}
        nodes.append(Node(name, "transpose", (g,), src.shape, freeze(params), fwd.where))
    elif rule.form == GATE:
        nodes.append(Node(name, rule.kind, (src.name, g), src.shape, freeze(rule.params),
                          fwd.where))
    elif rule.form == PRODUCT:
        other = fwd.inputs[1 - idx]
        nodes.append(Node(name, "mul", (other, g), src.shape, freeze({}), fwd.where))
    elif rule.form == CHAIN:
        d = fwd.name  # the derivative is the op's own output (exp)
        if rule.kind is not None:
            d = f"dact_{fwd.name}"
            nodes.append(Node(d, rule.kind, (src.name,), src.shape, freeze(rule.params),
                              fwd.where))
        nodes.append(Node(name, "mul", (d, g), src.shape, freeze({}), fwd.where))
    else:
        raise ValueError(f"op {fwd.op!r} states an unknown Jacobian rule {rule.form!r}")
    return name


def jacobian_graph(forward: Graph, C: Tensor, q: float | None = None) -> JacobianGraph:
    """The joint graph for spec rows C [S, K] (batch dimension = rows).

    With q = 1 or 2 the graph ends in a node computing sum_j |g_j| or sum_j g_j^2.
    """
    dep = forward.depends_on_input()
    nodes = list(forward.nodes)
    nodes.append(Node(SPEC, CONST, (), forward[forward.output].shape, freeze({"value": C}),
                      "specification rows"))
    cot: dict[str, list[str]] = {forward.output: [SPEC]}
    cot_of: dict[str, str] = {}
    gradient = None
    for fwd in reversed(forward.nodes):
        parts = cot.pop(fwd.name, None)
        if not parts or not dep[fwd.name]:
            continue
        g = parts[0]
        if len(parts) > 1:
            g = f"cot_{fwd.name}"
            nodes.append(Node(g, "add", tuple(parts), fwd.shape,
                              freeze({"coeffs": (1.0,) * len(parts)}), fwd.where))
        cot_of[fwd.name] = g
        if fwd.op == INPUT:
            gradient = g
            continue
        for idx, src in enumerate(fwd.inputs):
            if dep[src]:
                cot.setdefault(src, []).append(_backward_node(fwd, idx, forward, g, nodes))
    if gradient is None:
        raise UnsupportedOperationError("output", "graph", [], hint="output ignores the input")
    norm = _append_norm(nodes, forward[forward.input].shape, gradient, q, C)
    return JacobianGraph(Graph(tuple(nodes), forward.input, norm or gradient), gradient, norm,
                         MappingProxyType(cot_of))


def _append_norm(nodes: list[Node], shape: tuple[int, ...], g: str, q: float | None,
                 like: Tensor) -> str | None:
    if q not in (1.0, 2.0):
        return None
    n = 1
    for s in shape:
        n *= s
    elem = "abs" if q == 1.0 else "square"
    nodes.append(Node("norm_elem", elem, (g,), shape, freeze({}), "gradient norm"))
    nodes.append(Node("norm_flat", "reshape", ("norm_elem",), (n,), freeze({"shape": (n,)}),
                      "gradient norm"))
    ones = torch.ones(1, n, dtype=like.dtype, device=like.device)
    nodes.append(Node("norm_sum", "linear", ("norm_flat",), (1,),
                      freeze({"weight": ones, "bias": None}), "gradient norm"))
    return "norm_sum"
