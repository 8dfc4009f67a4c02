"""A traced graph read as a chain ``x -> W_1 -> act_1 -> W_2 -> ... -> act_{L-1} -> W_L``.

Between two activations sit single-input linear ops (linear, conv, pooling averages,
scale-shift, reshapes, ...); their composition is one dense layer matrix. Every activation
must be elementwise with a slope restriction ``0 <= (f(a) - f(b)) / (a - b) <= beta`` (its
op's ``slope_range`` fact: ReLU, LeakyReLU with slope in [0, 1], sigmoid, tanh, softplus,
ELU, monotone piecewise-linear ops). Biases are irrelevant for Lipschitz constants.

Exactness: a layer whose op states its matrix (``norm_fact(...).matrix``: a ``linear``
weight, float32 or float64) is exact in float64 and flat views (``flat_view``: reshapes,
identities) are the identity on C-order flattened vectors; other linear ops are made dense
by transposing the identity (:func:`lipbound.jacobian.naive._dense`, elementwise error
``|D - L| <= 2 gamma |L|``), and products of layer pieces are computed in float64 with
``|fl(A B) - A B| <= gamma_k |A| |B|``. Each :class:`ChainLayer` carries ``err``, a certified
upper bound of ``||W_exact - weight||_2`` (0 when exact), so callers can account for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lipbound.errors import UnsupportedOperationError
from lipbound.graph.ir import INPUT, Graph
from lipbound.jacobian.naive import _MAX_DENSE, _dense, _terms
from lipbound.jacobian.spectral import frobenius_upper, gamma_up, up
from lipbound.ops import registry

#: widest layer (rows or columns) a chain may have: the certificates factor matrices of
#: twice that size
CHAIN_MAX_DIM = 2048


@dataclass(frozen=True)
class ChainLayer:
    """``weight`` [out, in] (float64) within ``err`` (spectral norm) of the exact layer map;
    ``beta``: the slope bound of the activation after it (None for the last layer)."""

    weight: np.ndarray
    err: float
    beta: float | None


@dataclass(frozen=True)
class _Piece:
    w: np.ndarray | None  # None: the identity so far
    e: np.ndarray | None  # elementwise error bound (None: exact)


def _unsupported(node, why: str) -> UnsupportedOperationError:
    return UnsupportedOperationError(node.op, node.where, ["a chain of linear ops and "
                                                          "monotone slope-restricted "
                                                          "activations"], hint=why)


def _compose(first: _Piece, w: np.ndarray, e: np.ndarray | None) -> _Piece:
    """The piece ``W @ first`` with its elementwise error bound."""
    if first.w is None:
        return _Piece(w, e)
    a, b = w, first.w
    prod = a @ b
    k = a.shape[1]
    bound = gamma_up(k + 2) * (np.abs(a) @ np.abs(b))
    if e is not None:
        bound = bound + e @ np.abs(b)
    if first.e is not None:
        bound = bound + np.abs(a) @ first.e
        if e is not None:
            bound = bound + e @ first.e
    return _Piece(prod, bound * (1 + gamma_up(k + 8)))


def _close(piece: _Piece, n: int) -> tuple[np.ndarray, float]:
    if piece.w is None:
        return np.eye(n), 0.0
    if piece.e is None:
        return piece.w, 0.0
    return piece.w, up(frobenius_upper(torch.from_numpy(piece.e)) * (1 + 4 * 2.0 ** -53))


def _beta(node) -> float:
    op = registry.get(node.op, node.where)
    rng = op.slope_range(node.params) if len(node.inputs) == 1 else None
    if rng is None or not (rng[0] >= 0.0):
        raise _unsupported(node, "the activation is not monotone with a known slope range")
    return float(rng[1])


def read_chain(graph: Graph) -> tuple[ChainLayer, ...]:
    """The layers of ``graph`` (UnsupportedOperationError if it is not such a chain)."""
    dep = graph.depends_on_input()
    prev = graph.input
    n = graph[graph.input].numel
    piece = _Piece(None, None)
    layers: list[ChainLayer] = []
    for node in graph.nodes:
        if node.op == INPUT or not dep[node.name]:
            continue
        live = [s for s in node.inputs if dep[s]]
        if live != [prev]:
            raise _unsupported(node, "a branch or a fan-in (not a chain)")
        op = registry.get(node.op, node.where)
        if op.linear:
            matrix = op.norm_fact(node.params, node.inputs.index(prev)).matrix
            if getattr(op, "flat_view", False):
                pass
            elif matrix is not None:  # x -> W x exactly (a Linear layer)
                piece = _compose(piece, matrix.detach().double().cpu().numpy(), None)
            else:
                if node.numel * n > _MAX_DENSE:
                    raise _unsupported(node, "the layer is too large to make dense")
                d = _dense(node, node.inputs.index(prev), graph).cpu().numpy()
                g = 2 * gamma_up(_terms(node, graph))
                piece = _compose(piece, d, np.abs(d) * (g / (1 - g)))
        else:
            beta = _beta(node)
            w, err = _close(piece, n)
            layers.append(ChainLayer(w, err, beta))
            piece = _Piece(None, None)
        n = node.numel
        if n > CHAIN_MAX_DIM:
            raise _unsupported(node, f"a layer wider than {CHAIN_MAX_DIM}")
        prev = node.name
    if prev != graph.output:
        raise UnsupportedOperationError("output", "graph", ["a chain ending at the output"])
    w, err = _close(piece, n)
    layers.append(ChainLayer(w, err, None))
    return tuple(layers)


__all__ = ["CHAIN_MAX_DIM", "ChainLayer", "read_chain"]
