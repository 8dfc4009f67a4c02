"""Certified *global* Lipschitz bounds of a traced model's outputs and margins.

The naive product through op facts (:mod:`lipbound.jacobian.naive`): every linear op
contributes a certified upper bound of its induced norm (exact absolute sums for l_inf and
l_1; the Gram iteration, the unfolded-kernel bound for convolutions or the Schur test for l_2,
:mod:`lipbound.jacobian.spectral`), every activation its ``lipschitz`` fact, fan-in adds, and
the last Linear is folded with the spec rows. Every scalar step is rounded upward, so the
results bound the Lipschitz constant of the real-arithmetic function of the graph's weights
(the function every other bound of lipbound is about) for all inputs at once.

A global constant bounds every local one: ``lipbound.local_lipschitz`` returns
``min(local, global)`` per row (``details["bound_source"]`` says which won).

    g = global_lipschitz(model, x, norm=2)            # rows of f (spec=None) or of C f
    L = margin_lipschitz(model, x, norm=2)            # [K, K]: Lip(f_c - f_j) <= L[c, j]

``x`` only fixes the input shape for tracing. The per-graph factors are cached per model,
input shape, parameter versions, norm and dtype.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
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

    @property
    def value(self) -> float:
        return float(self.upper.max())

    def to_dict(self) -> dict[str, Any]:
        return {"upper": self.upper.tolist(), "value": self.value,
                "norm": "inf" if self.norm == math.inf else self.norm,
                "method": self.method, "time": self.time}


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


def graph_global_lipschitz(graph: Graph, C: Tensor, p: float, model: Any = None) -> Tensor:
    """Certified global bounds [S] (float64) on the p-Lipschitz constants of the rows of C f."""
    return fold_spec(graph_factors(graph, p, model), C)


def pair_spec(num_classes: int, dtype=torch.float64, device=None) -> Tensor:
    """All ``K^2`` rows ``e_c - e_j`` (row ``c K + j``; zero rows on the diagonal)."""
    eye = torch.eye(num_classes, dtype=dtype, device=device)
    return (eye[:, None, :] - eye[None, :, :]).reshape(num_classes * num_classes, num_classes)


def _traced_graph(model: nn.Module | Graph, x: Any) -> Graph:
    from lipbound.inputs import as_tensor, batched_for, get_traced, resolve_model

    model = resolve_model(model)
    x = as_tensor(x)
    return get_traced(model, batched_for(model, x), torch.float64, x.device).graph


def global_lipschitz(model: nn.Module | Graph, x: Any, norm: float | int | str = 2,
                     spec: Any = None) -> GlobalLipschitz:
    """Certified global Lipschitz bounds of the rows of ``C f`` (``spec`` as in
    ``lipbound.local_lipschitz``) w.r.t. the input norm ``norm`` (gradients in its dual).
    ``x``: any input of the right shape (used to trace the model)."""
    from lipbound.inputs import resolve_model, spec_matrix

    start = time.perf_counter()
    p = parse_norm(norm)
    model = resolve_model(model)
    graph = _traced_graph(model, x)
    K = graph[graph.output].shape[0]
    C = spec_matrix(spec, K, torch.float64, torch.device("cpu"))
    upper = graph_global_lipschitz(graph, C, p, model)
    return GlobalLipschitz(upper.cpu(), p, time=time.perf_counter() - start)


def margin_lipschitz(model: nn.Module | Graph, x: Any, norm: float | int | str = 2) -> Tensor:
    """``[K, K]`` float64 matrix L with ``Lip(f_c - f_j) <= L[c, j]`` in ``norm`` (zero
    diagonal), for every input."""
    p = parse_norm(norm)
    graph = _traced_graph(model, x)
    K = graph[graph.output].shape[0]
    out = graph_global_lipschitz(graph, pair_spec(K), p, model).reshape(K, K).cpu()
    out.fill_diagonal_(0.0)
    return out


__all__ = ["METHOD", "GlobalLipschitz", "global_lipschitz", "graph_factors",
           "graph_global_lipschitz", "margin_lipschitz", "pair_spec"]
