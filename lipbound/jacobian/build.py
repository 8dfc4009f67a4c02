"""Derive the Clarke-Jacobian graph of a forward graph.

Given a forward graph f: x -> y [K] and spec rows C [S, K], the joint graph computes, for every
row s (batched as the batch dimension), the chain-rule gradient ``g = J_f(x)^T C_s`` [*in]:

- the cotangent of the output is the constant ``C_s`` (a ``const`` node of batch S);
- a linear op's cotangent flows through its ``transpose`` (conv -> conv_transpose, reshapes,
  pooling and padding -> their adjoints), fan-in adds cotangents (``add``);
- ReLU / LeakyReLU become ``relu_switch`` / ``leaky_switch`` nodes reading the forward
  pre-activation z; smooth activations become ``mul(act'(z), a)``; max pooling becomes
  ``max_pool_grad(z, a)``, max over dims ``reduce_max_grad(z, a)``;
- every other elementwise op states its derivative as a registered op on the same input
  (:meth:`~lipbound.ops.base.NonlinearOp.derivative`: a step function ``pwl`` for
  piecewise-linear ops, |.| and hardswish, ``pow`` for log and powers, ``2 z`` for squares,
  the op's own output for exp), and the cotangent is ``mul(derivative, a)``;
- a product ``mul(x, y)`` of two input-dependent values has the product rule: ``mul(y, a)``
  to x and ``mul(x, a)`` to y.

The set of values g can take at x contains every Clarke generalised gradient of C_s . f at x
(the chain rule with set-valued derivatives is a superset of the Clarke Jacobian).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lipbound.errors import UnsupportedOperationError
from lipbound.graph.ir import CONST, INPUT, Graph, Node, freeze
from lipbound.ops import registry
from lipbound.ops.smooth import DERIVATIVES

SPEC = "jac_spec"


@dataclass(frozen=True)
class JacobianGraph:
    """The joint forward + backward graph; ``gradient`` names the node g [*in] and ``norm``
    the node sum_j |g_j| (q = 1) or sum_j g_j^2 (q = 2), or None."""

    graph: Graph
    gradient: str
    norm: str | None = None


def _backward_node(fwd: Node, idx: int, forward: Graph, g: str, nodes: list[Node]) -> str:
    """Append the node(s) that map the cotangent g of ``fwd`` to its input ``src``."""
    name = f"grad_{fwd.name}_{idx}"
    src = forward[fwd.inputs[idx]]
    op = registry.get(fwd.op, fwd.where)
    if op.linear:
        params = {"inner": fwd.op, "inner_params": fwd.params, "index": idx,
                  "in_shapes": tuple(forward[s].shape for s in fwd.inputs)}
        nodes.append(Node(name, "transpose", (g,), src.shape, freeze(params), fwd.where))
    elif fwd.op == "relu":
        nodes.append(Node(name, "relu_switch", (src.name, g), src.shape, freeze({}), fwd.where))
    elif fwd.op == "leaky_relu":
        nodes.append(Node(name, "leaky_switch", (src.name, g), src.shape, fwd.params, fwd.where))
    elif fwd.op in DERIVATIVES:
        d = f"dact_{fwd.name}"
        nodes.append(Node(d, DERIVATIVES[fwd.op].name, (src.name,), src.shape, freeze({}),
                          fwd.where))
        nodes.append(Node(name, "mul", (d, g), src.shape, freeze({}), fwd.where))
    elif fwd.op == "max_pool":
        nodes.append(Node(name, "max_pool_grad", (src.name, g), src.shape, fwd.params,
                          fwd.where))
    elif fwd.op == "reduce_max":
        nodes.append(Node(name, "reduce_max_grad", (src.name, g), src.shape, fwd.params,
                          fwd.where))
    elif fwd.op == "mul":
        other = fwd.inputs[1 - idx]
        nodes.append(Node(name, "mul", (other, g), src.shape, freeze({}), fwd.where))
    elif op.derivative(fwd.params) is not None and len(fwd.inputs) == 1:
        rule = op.derivative(fwd.params)
        if rule == op.DERIVATIVE_IS_OUTPUT:
            d = fwd.name
        else:
            d = f"dact_{fwd.name}"
            kind, params = rule
            nodes.append(Node(d, kind, (src.name,), src.shape, freeze(params), fwd.where))
        nodes.append(Node(name, "mul", (d, g), src.shape, freeze({}), fwd.where))
    else:
        supported = ["linear ops", "relu", "leaky_relu", "max_pool", "reduce_max", "mul",
                     *sorted(DERIVATIVES), "elementwise ops with a stated derivative "
                     "(pwl, hardswish, exp, log, pow, abs, square)"]
        raise UnsupportedOperationError(fwd.op, fwd.where, supported,
                                        hint="No Clarke-Jacobian rule for this operator.")
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
        if fwd.op == INPUT:
            gradient = g
            continue
        for idx, src in enumerate(fwd.inputs):
            if dep[src]:
                cot.setdefault(src, []).append(_backward_node(fwd, idx, forward, g, nodes))
    if gradient is None:
        raise UnsupportedOperationError("output", "graph", [], hint="output ignores the input")
    norm = _append_norm(nodes, forward[forward.input].shape, gradient, q, C)
    return JacobianGraph(Graph(tuple(nodes), forward.input, norm or gradient), gradient, norm)


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
