"""The public API (DESIGN section 2): output bounds, Jacobian bounds, local Lipschitz constants."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lipbound.bounds.domains import make_domain
from lipbound.graph.ir import Graph
from lipbound.inputs import as_tensor, batched_input, check_eps, get_graph, spec_matrix, widen
from lipbound.propagate.driver import bound_graph_spec, check_method, prepare_state


class OutputBounds(NamedTuple):
    """Certified ``lower[s] <= C_s . f(x) <= upper[s]`` for every x in the input set; [S] each."""

    lower: Tensor
    upper: Tensor


def output_bounds(model: nn.Module, x: Any, eps: float, norm: float | int | str = math.inf,
                  spec: Any = None, method: str = "crown",
                  data_range: tuple[Any, Any] | None = None, iterations: int = 30,
                  dtype: torch.dtype = torch.float64) -> OutputBounds:
    """Sound bounds on ``C f(x')`` over ``{x' : ||x' - x||_norm <= eps}`` (∩ data_range).

    model: eval-mode module mapping [B, *in] -> [B, K]; x: [*in] or [1, *in]; spec: None
    (identity) or [S, K]; method: "ibp" | "crown" | "alpha-crown" (the branch-and-bound method
    "bab" comes with its own module). Computation runs in ``dtype`` (float64 by default) on
    x's device; results are widened outward to absorb rounding.
    """
    method = check_method(method)
    eps = check_eps(eps)
    x = as_tensor(x)
    if isinstance(model, Graph):
        graph = get_graph(model, x, dtype, x.device)
        x1 = x.reshape(1, *model[model.input].shape)
    else:
        x1 = batched_input(model, x)
        graph = get_graph(model, x1, dtype, x.device)
    x1 = x1.to(dtype)
    K = graph[graph.output].shape[0]
    C = spec_matrix(spec, K, dtype, x.device)
    domain = make_domain(x1, eps, norm, data_range)
    state = prepare_state(graph, domain, method)
    lo, up = bound_graph_spec(state, graph.output, C.unsqueeze(0), method, iterations)
    return OutputBounds(*widen(lo[0], up[0]))
