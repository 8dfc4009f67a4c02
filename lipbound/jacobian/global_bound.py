"""Certified *global* Lipschitz bounds of a traced model's outputs and margins.

The naive product through op facts (:mod:`lipbound.jacobian.naive`): every linear op
contributes a certified upper bound of its induced norm (exact absolute sums for l_inf and
l_1; the Gram iteration, the unfolded-kernel bound for convolutions or the Schur test for l_2,
:mod:`lipbound.jacobian.spectral`), every activation its ``lipschitz`` fact, fan-in adds, and
the last Linear is folded with the spec rows. Every scalar step is rounded upward, so the
results bound the Lipschitz constant of the real-arithmetic function of the graph's weights
(the function every other bound of lipbound is about) for all inputs at once.

Also here, for l_2: certified ECLipsE-Fast on chains (:mod:`lipbound.jacobian.eclipse`,
matrix inequalities proved by Cholesky in float64) and "fast", the least of the two, which
``lipbound.local_lipschitz`` caps its local results with (``min(local, global)`` per row;
``details["bound_source"]`` says which won). The public entry points (methods naive /
eclipse / lipsdp / fast / best, soft outputs) are in :mod:`lipbound.global_api`.

The per-graph factors and ECLipsE states are cached per model, input shape, parameter
versions, norm and dtype.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lipbound.bounds.domains import parse_norm
from lipbound.graph.ir import Graph
from lipbound.jacobian.naive import NaiveFactors, fold_spec, naive_factors

#: what the bound is, for reports
METHOD = "naive product of certified induced norms"

_CACHE: OrderedDict[tuple, NaiveFactors] = OrderedDict()
_CACHE_SIZE = 32


@dataclass(frozen=True)
class GlobalLipschitz:
    """``upper[s]`` >= the Lipschitz constant of row s of C f w.r.t. ``||.||_norm`` on the
    whole input space (dual norm of every Clarke gradient, everywhere)."""

    upper: Tensor
    norm: float
    method: str = METHOD
    time: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return float(self.upper.max())

    def to_dict(self) -> dict[str, Any]:
        return {"upper": self.upper.tolist(), "value": self.value,
                "norm": "inf" if self.norm == math.inf else self.norm,
                "method": self.method, "time": self.time, "details": self.details}


def _key(model: Any, graph: Graph, p: float) -> tuple | None:
    if isinstance(model, Graph) or model is None:
        return None
    from lipbound.inputs import _fingerprint

    g_in = graph[graph.input]
    dtype = next((v.dtype for n in graph.nodes for v in n.params.values()
                  if isinstance(v, Tensor) and v.is_floating_point()), None)
    return (id(model), tuple(g_in.shape), _fingerprint(model), p, dtype)


def graph_factors(graph: Graph, p: float, model: Any = None) -> NaiveFactors:
    """:func:`lipbound.jacobian.naive.naive_factors`, cached when ``model`` (the module the
    graph was traced from) is given. Raises UnsupportedOperationError for ops without a
    Lipschitz fact."""
    key = _key(model, graph, p)
    if key is not None:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    factors = naive_factors(graph, p)
    if key is not None:
        _CACHE[key] = factors
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return factors


#: graph-level methods: the naive product, certified ECLipsE-Fast (l_2, chains of monotone
#: slope-restricted activations), and "fast": the least of those that apply
GRAPH_METHODS = ("naive", "eclipse", "fast")
METHODS_DESCRIBED = {"naive": METHOD, "eclipse": "ECLipsE-Fast, certified (l_2 chains)"}


def _eclipse_state(graph: Graph, model: Any = None):
    """The certified ECLipsE state of the graph (cached like the naive factors); raises
    UnsupportedOperationError when the graph is not a chain it covers."""
    from lipbound.jacobian.chain import read_chain
    from lipbound.jacobian.eclipse import eclipse_chain

    key = _key(model, graph, -2.0)
    if key is not None and key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    state = eclipse_chain(read_chain(graph))
    if key is not None:
        _CACHE[key] = state
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return state


def _eclipse_rows(graph: Graph, C: Tensor, p: float, model: Any) -> Tensor:
    from lipbound.errors import UnsupportedNormError
    from lipbound.jacobian.eclipse import eclipse_rows

    if p != 2.0:
        raise UnsupportedNormError("method 'eclipse' bounds l_2 Lipschitz constants only")
    state = _eclipse_state(graph, model)
    if state is None:
        return torch.full((C.shape[0],), math.inf, dtype=torch.float64)
    return torch.from_numpy(eclipse_rows(state, C.detach().double().cpu().numpy()))


def graph_global_lipschitz(graph: Graph, C: Tensor, p: float, model: Any = None,
                           method: str = "naive") -> Tensor:
    """Certified global bounds [S] (float64) on the p-Lipschitz constants of the rows of C f.

    ``method``: "naive", "eclipse" (l_2 only; UnsupportedOperationError off a chain) or
    "fast" (the least of the two where eclipse applies)."""
    if method not in GRAPH_METHODS:
        from lipbound.errors import InputError

        raise InputError(f"method must be one of {GRAPH_METHODS}, got {method!r}")
    if method == "eclipse":
        return _eclipse_rows(graph, C, p, model)
    naive = fold_spec(graph_factors(graph, p, model), C)
    if method == "fast" and p == 2.0:
        from lipbound.errors import UnsupportedOperationError

        try:
            return torch.minimum(naive, _eclipse_rows(graph, C, p, model).to(naive.device))
        except UnsupportedOperationError:
            return naive
    return naive


def graph_vector_lipschitz(graph: Graph, model: Any = None, method: str = "naive") -> float:
    """A certified bound on the l_2 -> l_2 Lipschitz constant of the whole output vector
    (``method`` as in :func:`graph_global_lipschitz`)."""
    from lipbound.jacobian.eclipse import eclipse_vector
    from lipbound.jacobian.spectral import gram_upper, up

    out = math.inf
    if method in ("naive", "fast"):
        f = graph_factors(graph, 2.0, model)
        out = f.k_in if f.last is None else up(up(gram_upper(f.last)) * f.k_in)
    if method in ("eclipse", "fast"):
        from lipbound.errors import UnsupportedOperationError

        try:
            state = _eclipse_state(graph, model)
            if state is not None:
                out = min(out, eclipse_vector(state))
        except UnsupportedOperationError:
            if method == "eclipse":
                raise
    return out


def pair_spec(num_classes: int, dtype=torch.float64, device=None) -> Tensor:
    """All ``K^2`` rows ``e_c - e_j`` (row ``c K + j``; zero rows on the diagonal)."""
    eye = torch.eye(num_classes, dtype=dtype, device=device)
    return (eye[:, None, :] - eye[None, :, :]).reshape(num_classes * num_classes, num_classes)


def traced_graph(model: nn.Module | Graph, x: Any) -> Graph:
    """The float64 graph of ``model`` traced at the shape of ``x``."""
    from lipbound.inputs import as_tensor, batched_for, get_traced, resolve_model

    model = resolve_model(model)
    x = as_tensor(x)
    return get_traced(model, batched_for(model, x), torch.float64, x.device).graph


def margin_lipschitz(model: nn.Module | Graph, x: Any, norm: float | int | str = 2,
                     method: str = "fast") -> Tensor:
    """``[K, K]`` float64 matrix L with ``Lip(f_c - f_j) <= L[c, j]`` in ``norm`` (zero
    diagonal), for every input, by a graph method (:data:`GRAPH_METHODS`; "fast": the naive
    product, and certified ECLipsE-Fast where it applies and is tighter).
    :func:`lipbound.global_api.margin_lipschitz` adds LipSDP."""
    p = parse_norm(norm)
    graph = traced_graph(model, x)
    K = graph[graph.output].shape[0]
    out = graph_global_lipschitz(graph, pair_spec(K), p, model, method).reshape(K, K).cpu()
    out.fill_diagonal_(0.0)
    return out


__all__ = ["GRAPH_METHODS", "METHOD", "GlobalLipschitz", "graph_factors",
           "graph_global_lipschitz", "graph_vector_lipschitz", "margin_lipschitz", "pair_spec",
           "traced_graph"]
