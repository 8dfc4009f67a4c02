"""Public API: certified *global* Lipschitz bounds of a model's logits or soft outputs.

    g = global_lipschitz(model, x, norm=2)                        # rows of f (or of C f)
    g = global_lipschitz(model, x, 2, method="best")              # least certified bound
    g = global_lipschitz(model, x, 2, output="softmax", temperature=0.5)
    L = margin_lipschitz(model, x, norm=2)                        # [K, K]: Lip(f_c - f_j)

Methods (every one an upper bound of the Lipschitz constant of the real-arithmetic function
of the model's weights, float rounding of its own computation included):

* "naive": product of certified induced norms through the graph's op facts, any norm
  (:mod:`lipbound.jacobian.naive`; convolutions by the Gram iteration of their dense matrix or
  the unfolded-kernel bound, :mod:`lipbound.jacobian.spectral`);
* "eclipse": ECLipsE-Fast with every matrix inequality proved in float64
  (:mod:`lipbound.jacobian.eclipse`; l_2, chains of linear ops and monotone slope-restricted
  activations, convolutions made dense);
* "lipsdp": LipSDP-Neuron solved by SCS and certified by a rigorous eigenvalue bound
  (:mod:`lipbound.exact.lipsdp`; l_2, ReLU/LeakyReLU MLPs; one SDP for the logit vector,
  rows bounded by ``||C_s||_2`` times it; slow for wide nets);
* "fast": the least of naive and eclipse (what ``local_lipschitz`` caps with);
* "best": the least of all that apply.

``output``: "logits" (f itself), "softmax" or "sparsemax" of ``f / temperature``
(:mod:`lipbound.jacobian.soft`). ``x`` only fixes the input shape for tracing.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor, nn

from lipbound.bounds.domains import parse_norm
from lipbound.errors import InputError, UnsupportedModelError
from lipbound.gradmode import outside_inference_mode
from lipbound.graph.ir import Graph
from lipbound.jacobian.global_bound import (
    GlobalLipschitz,
    graph_global_lipschitz,
    graph_vector_lipschitz,
    pair_spec,
    traced_graph,
)
from lipbound.jacobian.soft import check_output, soft_rows

METHODS = ("naive", "eclipse", "lipsdp", "fast", "best")


def _lipsdp_vector(graph: Graph) -> float:
    """LipSDP-Neuron's certified l_2 bound of the logit vector (inf when it does not apply,
    the solver fails, or the graph's layers are not exactly representable as float64
    matrices: the MLP reader composes affine pieces in floating point, so only chains whose
    composition is exact, linear weights and reshapes, are handed to it)."""
    from lipbound.errors import SolverError, UnsupportedOperationError
    from lipbound.exact.from_graph import mlp_from_graph
    from lipbound.exact.lipsdp import lipsdp_neuron
    from lipbound.jacobian.chain import read_chain

    try:
        if any(layer.err > 0 for layer in read_chain(graph)):
            return math.inf
        res = lipsdp_neuron(mlp_from_graph(graph, "method 'lipsdp'").mlp)
    except (UnsupportedModelError, UnsupportedOperationError, SolverError):
        return math.inf
    return float(res.certified)


def _rows_and_vector(graph: Graph, C: Tensor, p: float, model: Any, method: str
                     ) -> tuple[Tensor, float | None, dict[str, Any]]:
    """Row bounds [S] of C f, the l_2 vector bound (p = 2; else None) and per-method values."""
    graph_method = {"lipsdp": "naive", "best": "fast"}.get(method, method)
    rows = graph_global_lipschitz(graph, C, p, model, graph_method)
    vec = graph_vector_lipschitz(graph, model, graph_method) if p == 2.0 else None
    details: dict[str, Any] = {}
    if method in ("lipsdp", "best") and p == 2.0:
        sdp = _lipsdp_vector(graph)
        details["lipsdp_vector"] = sdp
        if math.isfinite(sdp):
            from lipbound.jacobian.spectral import gamma_up

            # ||C_s J||_2 <= ||C_s||_2 ||J||_2; the norm's rounding is at most gamma_{K+2}
            cn = torch.linalg.vector_norm(C.double().cpu(), dim=1) * (1 + gamma_up(C.shape[1] + 2))
            by_sdp = torch.nextafter(cn * sdp * (1 + 2.0 ** -50), torch.tensor(math.inf,
                                                                                dtype=cn.dtype))
            rows = torch.minimum(rows, by_sdp.to(rows.device)) if method == "best" else by_sdp
            vec = min(vec, sdp) if method == "best" else sdp
    elif method == "lipsdp":
        raise InputError("method 'lipsdp' bounds l_2 Lipschitz constants only")
    return rows, vec, details


@outside_inference_mode
def global_lipschitz(model: nn.Module | Graph, x: Any, norm: float | int | str = 2,
                     spec: Any = None, method: str = "fast", output: str = "logits",
                     temperature: float = 1.0) -> GlobalLipschitz:
    """Certified global Lipschitz bounds of the rows of ``C out`` (``spec`` as in
    ``lipbound.local_lipschitz``; ``out`` the logits or their softmax / sparsemax at
    ``temperature``) w.r.t. the input norm ``norm`` (gradients in its dual), by ``method``
    (module docstring). ``x``: any input of the right shape (used to trace the model)."""
    from lipbound.inputs import resolve_model, spec_matrix

    start = time.perf_counter()
    p = parse_norm(norm)
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    check_output(output, temperature)
    model = resolve_model(model)
    graph = traced_graph(model, x)
    K = graph[graph.output].shape[0]
    C = spec_matrix(spec, K, torch.float64, torch.device("cpu"))
    if output == "logits":
        upper, vec, details = _rows_and_vector(graph, C, p, model, method)
    else:
        eye = torch.eye(K, dtype=torch.float64)
        rows, vec, details = _rows_and_vector(graph, eye, p, model, method)
        upper = soft_rows(output, temperature, C, rows, vec)
    details = {**details, "output": output, "temperature": temperature,
               "vector_l2": vec}
    return GlobalLipschitz(upper.cpu(), p, method=method, time=time.perf_counter() - start,
                           details=details)


@outside_inference_mode
def margin_lipschitz(model: nn.Module | Graph, x: Any, norm: float | int | str = 2,
                     method: str = "fast") -> Tensor:
    """``[K, K]`` float64 matrix L with ``Lip(f_c - f_j) <= L[c, j]`` in ``norm`` (zero
    diagonal), for every input (``method`` as in :func:`global_lipschitz`)."""
    p = parse_norm(norm)
    graph = traced_graph(model, x)
    K = graph[graph.output].shape[0]
    out = global_lipschitz(model, x, p, spec=pair_spec(K), method=method).upper
    out = out.reshape(K, K).cpu()
    out.fill_diagonal_(0.0)
    return out


__all__ = ["METHODS", "global_lipschitz", "margin_lipschitz"]
