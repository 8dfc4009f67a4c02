"""The naive bound: a product (sum over paths) of induced operator norms.

For the input norm p, every node gets K(n) with ||v_n(x) - v_n(y)||_p <= K(n) ||x - y||_p:
linear ops multiply by their induced p->p norm (max row sum for l_inf, max column sum for l_1,
the spectral norm for l_2: exact SVD when the matrix is small, else the Schur bound
sqrt(||L||_1 ||L||_inf)), fan-in adds, activations multiply by sup |act'| (any elementwise op
with a global ``lipschitz`` constant: hardtanh, hardswish, |.|, ...), max pooling by its
window overlap, max over dims by 1. The last Linear is folded with the spec:
L_s <= ||(C W)_s||_q K(input). The bound is global (valid for every x), hence also local.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lipbound.errors import UnsupportedOperationError
from lipbound.graph.ir import INPUT, Graph, Node
from lipbound.ops import registry
from lipbound.ops.smooth import ACTIVATIONS

_MAX_DENSE = 4_000_000


def _dense(node: Node, idx: int, graph: Graph) -> Tensor:
    """The matrix [out, in] of input ``idx`` of a linear node (by transposing the identity)."""
    op = registry.get(node.op)
    in_shapes = [graph[s].shape for s in node.inputs]
    m = node.numel
    eye = torch.eye(m, dtype=torch.float64).reshape(m, *node.shape)
    params = {k: (v.double() if isinstance(v, Tensor) and v.is_floating_point() else v)
              for k, v in node.params.items()}
    return op.vjp(params, eye, in_shapes)[idx].reshape(m, -1)


def _abs_sums(node: Node, idx: int, graph: Graph, p: float) -> Tensor:
    """max row (p = inf) or column (p = 1) absolute sum of input idx's matrix."""
    op = registry.get(node.op)
    in_shapes = [graph[s].shape for s in node.inputs]
    dt = torch.float64
    if p == math.inf:
        xs = [torch.ones((1, *s), dtype=dt) if i == idx else torch.zeros((1, *s), dtype=dt)
              for i, s in enumerate(in_shapes)]
        return op.apply_linear(_to64(node.params), *xs, absolute=True).max()
    t = registry.get("transpose")
    params = {"inner": node.op, "inner_params": _to64(node.params), "index": idx,
              "in_shapes": tuple(in_shapes)}
    return t.apply_linear(params, torch.ones((1, *node.shape), dtype=dt), absolute=True).max()


def _to64(params):
    return {k: (v.double() if isinstance(v, Tensor) and v.is_floating_point() else v)
            for k, v in params.items()}


def induced_norm(node: Node, idx: int, graph: Graph, p: float) -> float:
    """Upper bound on the induced p->p norm of input idx's linear map (exact for inf, 1)."""
    if node.op == "linear":
        W = node.params["weight"].double().abs()
        if p == math.inf:
            return float(W.sum(1).max())
        if p == 1.0:
            return float(W.sum(0).max())
    if p in (math.inf, 1.0):
        return float(_abs_sums(node, idx, graph, p))
    n_in = graph[node.inputs[idx]].numel
    if node.numel * n_in <= _MAX_DENSE:
        M = node.params["weight"].double() if node.op == "linear" else _dense(node, idx, graph)
        return float(torch.linalg.matrix_norm(M, ord=2)) * (1 + 1e-12)
    a = float(_abs_sums(node, idx, graph, 1.0))
    b = float(_abs_sums(node, idx, graph, math.inf))
    return math.sqrt(a * b) * (1 + 1e-12)


def _activation_constant(node: Node, p: float) -> float:
    if node.op in ("relu", "leaky_relu"):
        return 1.0
    if node.op in ACTIVATIONS:
        return ACTIVATIONS[node.op].lipschitz
    if node.op == "max_pool":
        k, s = node.params["kernel_size"], node.params["stride"]
        k = (k, k) if isinstance(k, int) else k
        s = (s, s) if isinstance(s, int) else s
        overlap = math.prod(math.ceil(ki / si) for ki, si in zip(k, s))
        return 1.0 if p == math.inf else overlap ** (1.0 / p)
    if node.op == "reduce_max":  # 1-Lipschitz per group, groups disjoint: 1 for every p
        return 1.0
    op = registry.get(node.op, node.where)
    lip = op.lipschitz(node.params) if len(node.inputs) == 1 else None
    if lip is not None and math.isfinite(lip):  # elementwise: the same constant for every p
        return float(lip)
    raise UnsupportedOperationError(node.op, node.where, ["linear ops", "relu",
                                                                   "leaky_relu", "max_pool",
                                                                   "reduce_max",
                                                                   "globally Lipschitz "
                                                                   "elementwise ops",
                                                                   *ACTIVATIONS],
                                    hint="The naive bound needs a global Lipschitz constant "
                                         "(exp, log, powers and products have none).")


def naive_lipschitz(graph: Graph, C: Tensor, p: float) -> Tensor:
    """Global upper bounds [S] on the Lipschitz constant of each C_s . f w.r.t. ||.||_p."""
    q = {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}[p]
    dep = graph.depends_on_input()
    K: dict[str, float] = {}
    out = graph[graph.output]
    for node in graph.nodes:
        if not dep[node.name]:
            continue
        if node.op == INPUT:
            K[node.name] = 1.0
        elif node is out and node.op == "linear":
            break
        elif registry.get(node.op).linear:
            K[node.name] = sum(induced_norm(node, i, graph, p) * K[s]
                               for i, s in enumerate(node.inputs) if dep[s])
        else:
            K[node.name] = _activation_constant(node, p) * K[node.inputs[0]]
    C64 = C.double()
    if out.op == "linear":
        rows = C64 @ out.params["weight"].double()
        return torch.linalg.vector_norm(rows, ord=q, dim=1) * K[out.inputs[0]] * (1 + 1e-12)
    return torch.linalg.vector_norm(C64, ord=q, dim=1) * K[out.name] * (1 + 1e-12)
