"""The naive bound: a product (sum over paths) of induced operator norms.

For the input norm p, every node gets K(n) with ||v_n(x) - v_n(y)||_p <= K(n) ||x - y||_p:
linear ops multiply by an upper bound of their induced p->p norm, fan-in adds, elementwise
activations (any elementwise op with a global ``lipschitz`` fact, sup |act'|: ReLU-likes,
smooth activations, hardtanh, hardswish, |.|, ...) multiply by it, max pooling by its window
overlap, max over dims by 1. The last Linear is folded with the spec: L_s <= ||(C W)_s||_q K(input).
The bound is global (valid for every x), hence also local.

Induced norms (each an upper bound of the exact norm of the real matrix, float64 rounding of
its own computation included; :mod:`lipbound.jacobian.spectral`):

* l_inf / l_1: the largest absolute row / column sum (exact up to the sums' rounding);
* l_2: the Gram iteration on the matrix (``spectral.gram_upper``: certified, tight to about
  1e-6) when it is small enough, the unfolded-kernel bound for convolutions, and the Schur
  test ``sqrt(||L||_1 ||L||_inf)``; the least of those that apply;
* closed forms stated by the ops (:meth:`~lipbound.ops.base.LinearOp.norm_fact`): weight-free
  reshapes, permutations, zero padding, slices and concatenation parts: 1 in every norm (each
  output is 0 or a copy of a distinct input element); scale-shift: max |scale|; a sum's
  input i: |coefficient i|; a dense layer's matrix and a convolution's kernel for the rules
  above; nonlinear ops state their factor (:meth:`~lipbound.ops.base.NonlinearOp.naive_factor`).

Scalar products and sums are rounded upward (``spectral.up``), so the result bounds the real
product of the real norms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lipbound.errors import UnsupportedOperationError
from lipbound.graph.ir import INPUT, Graph, Node
from lipbound.jacobian import spectral
from lipbound.jacobian.spectral import gamma_up, up
from lipbound.norms import dual_norm
from lipbound.ops import registry

_MAX_DENSE = 4_000_000


def _dense(node: Node, idx: int, graph: Graph) -> Tensor:
    """The matrix [out, in] of input ``idx`` of a linear node (by transposing the identity)."""
    op = registry.get(node.op)
    in_shapes = [graph[s].shape for s in node.inputs]
    m = node.numel
    eye = torch.eye(m, dtype=torch.float64).reshape(m, *node.shape)
    return op.vjp(_to64(node.params), eye, in_shapes)[idx].reshape(m, -1)


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


def _terms(node: Node, graph: Graph) -> int:
    """At least the number of terms of one absolute row or column sum of any input's matrix
    (for their rounding): rows have at most n_in terms, columns at most n_out."""
    return node.numel + sum(graph[s].numel for s in node.inputs) + 2


def induced_norm(node: Node, idx: int, graph: Graph, p: float) -> float:
    """Upper bound on the induced p->p norm of input idx's linear map (rounding included):
    the op's closed-form fact (:meth:`~lipbound.ops.base.LinearOp.norm_fact`) where it has
    one, else the numerical bounds below."""
    fact = registry.get(node.op, node.where).norm_fact(node.params, idx)
    if fact.every_p is not None:
        return fact.every_p
    if fact.matrix is not None:
        W = fact.matrix.double()
        if p == math.inf:
            return up(float(W.abs().sum(1).max()) * (1 + gamma_up(W.shape[1])))
        if p == 1.0:
            return up(float(W.abs().sum(0).max()) * (1 + gamma_up(W.shape[0])))
        if min(W.shape) <= spectral.GRAM_MAX_DIM:
            return min(spectral.gram_upper(W), spectral.dense_schur_upper(W))
        return spectral.dense_schur_upper(W)
    terms = _terms(node, graph)
    if p in (math.inf, 1.0):
        return up(float(_abs_sums(node, idx, graph, p)) * (1 + 2 * gamma_up(terms)))
    a = up(float(_abs_sums(node, idx, graph, 1.0)) * (1 + 2 * gamma_up(terms)))
    b = up(float(_abs_sums(node, idx, graph, math.inf)) * (1 + 2 * gamma_up(terms)))
    best = up(math.sqrt(up(a * b)))  # Schur test on the exact |L|
    if fact.conv is not None:
        best = min(best, spectral.conv_unfold_upper(*fact.conv))
    n_in = graph[node.inputs[idx]].numel
    if node.numel * n_in <= _MAX_DENSE and min(node.numel, n_in) <= spectral.GRAM_MAX_DIM:
        # the dense matrix D is computed in float64: |D - L| <= gamma |L| elementwise, so
        # ||L||_2 <= ||D||_2 + gamma || |L| ||_2 <= ||D||_2 + gamma sqrt(a b)
        D = _dense(node, idx, graph)
        best = min(best, up(spectral.gram_upper(D) + up(2 * gamma_up(terms) * best)))
    return best


def _activation_constant(node: Node, p: float) -> float:
    """The op's :meth:`~lipbound.ops.base.NonlinearOp.naive_factor` (UnsupportedOperationError
    naming the op and its place when it has none)."""
    op = registry.get(node.op, node.where)
    k = op.naive_factor(node.params, p)
    if k is None:
        raise UnsupportedOperationError(
            node.op, node.where, ["linear ops", "ops with a global Lipschitz constant "
                                  "(ReLU-like, smooth and piecewise-linear activations, |.|, "
                                  "max pooling and max over dims)"],
            hint=op.no_jacobian_reason or "The naive bound needs a global Lipschitz constant "
                 "(exp, log, powers and products have none).")
    return k


def _dense_matrix(node: Node) -> Tensor | None:
    """W when the node is a dense layer ``W x + b`` on its only input (else None)."""
    op = registry.get(node.op, node.where)
    return op.norm_fact(node.params, 0).matrix if op.linear and len(node.inputs) == 1 else None


@dataclass(frozen=True)
class NaiveFactors:
    """The naive product up to the output: ``k_in`` bounds the p-Lipschitz constant of the
    last Linear's input (``last`` its weight [K, h]) or, without a final Linear (``last`` is
    None), of the output itself."""

    k_in: float
    last: Tensor | None
    p: float


def naive_factors(graph: Graph, p: float) -> NaiveFactors:
    """Walk the graph once: per-node constants K(n), all rounded up."""
    dep = graph.depends_on_input()
    K: dict[str, float] = {}
    out = graph[graph.output]
    for node in graph.nodes:
        if not dep[node.name]:
            continue
        if node.op == INPUT:
            K[node.name] = 1.0
        elif node is out and _dense_matrix(node) is not None:
            break
        elif registry.get(node.op, node.where).linear:
            total = 0.0
            for i, s in enumerate(node.inputs):
                if dep[s]:
                    total = up(total + up(induced_norm(node, i, graph, p) * K[s]))
            K[node.name] = total
        else:
            K[node.name] = up(_activation_constant(node, p) * K[node.inputs[0]])
    W = _dense_matrix(out)
    if W is not None:
        return NaiveFactors(K[out.inputs[0]], W.detach().double(), p)
    return NaiveFactors(K[out.name], None, p)


def fold_spec(f: NaiveFactors, C: Tensor) -> Tensor:
    """Global upper bounds [S] on the Lipschitz constant of each C_s . f (float64), with the
    rounding of the fold ``C W`` and of the norm included."""
    q = dual_norm(f.p)
    C64 = C.detach().double()
    if f.last is not None:
        W = f.last.to(C64.device)
        rows = C64 @ W
        # |fl(C W) - C W| <= gamma_K |C| |W|: its q-norm adds at most that much
        slack = torch.linalg.vector_norm(C64.abs() @ W.abs(), ord=q, dim=1)
        norms = torch.linalg.vector_norm(rows, ord=q, dim=1)
        n = W.shape[1]
        norms = (norms * (1 + gamma_up(n + 2)) + slack * gamma_up(C64.shape[1] + 2))
    else:
        n = C64.shape[1]
        norms = torch.linalg.vector_norm(C64, ord=q, dim=1) * (1 + gamma_up(n + 2))
    out = norms * f.k_in * (1 + 4 * 2.0 ** -53)
    return torch.nextafter(out, torch.full_like(out, math.inf))


def naive_lipschitz(graph: Graph, C: Tensor, p: float) -> Tensor:
    """Global upper bounds [S] on the Lipschitz constant of each C_s . f w.r.t. ||.||_p."""
    return fold_spec(naive_factors(graph, p), C)
