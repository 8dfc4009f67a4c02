"""CROWN's shortcuts cost no tightness on conv + BatchNorm residual blocks (issue 17).

:func:`~lipbound.propagate.intermediate.crown_intermediate` skips nodes whose IBP interval is
exact (affine images of the input box) and, per node, the elements that cannot change a
relaxation (stable ReLU inputs). The reference here bounds every node that a nonlinear op
reads, on all its elements, by CROWN (auto_LiRPA's CROWN does the same; its bounds equal
lipbound's on this family, see experiments/bench_residual_gap.py). The final bounds must be
no looser than the reference's, and contain the float64 forward pass at sampled points.

Mutation check (by hand): with ReLU's ``tighten_mask`` leaving out the unstable inputs with
u <= -l (CROWN bounds for only part of the residual sum's elements) 7 of the 8 cases fail.
"""

from __future__ import annotations

import math

import pytest
import torch

from lipbound.bounds.domains import make_domain
from lipbound.graph.shapes import nodes_needing_bounds
from lipbound.inputs import get_traced
from lipbound.propagate.driver import bound_graph_spec, prepare_state
from lipbound.propagate.ibp import evaluate_fixed, ibp_pass
from lipbound.propagate.intermediate import crown_node_bounds
from lipbound.propagate.state import BoundState
from tests.user_models import residual_family

FAMILY = residual_family(8)


def _setup(model, x: torch.Tensor, eps: float):
    x1 = x.unsqueeze(0).double()
    traced = get_traced(model, x1, torch.float64, x.device)
    domain = make_domain(x1, eps, math.inf)
    K = traced.graph[traced.graph.output].shape[0]
    return traced.graph, domain, torch.eye(K, dtype=torch.float64).unsqueeze(0)


def _full_crown_state(graph, domain) -> BoundState:
    state = BoundState(graph, domain, evaluate_fixed(graph))
    ibp_pass(state)
    for name in nodes_needing_bounds(graph):
        if name != graph.input:
            state.set_bounds(name, crown_node_bounds(state, name))
    return state


@pytest.mark.parametrize("index", range(len(FAMILY)))
def test_crown_no_looser_than_full_intermediate_crown(index: int) -> None:
    _, model, x, eps = FAMILY[index]
    graph, domain, C = _setup(model, x, eps)
    with torch.no_grad():
        lo, up = bound_graph_spec(prepare_state(graph, domain, "crown"), graph.output, C)
        ref_lo, ref_up = bound_graph_spec(_full_crown_state(graph, domain), graph.output, C)
    tol = 1e-12 * float((ref_up - ref_lo).abs().max())
    assert bool((lo >= ref_lo - tol).all() and (up <= ref_up + tol).all())
    pts = domain.sample(500, torch.Generator().manual_seed(index))[:, 0]
    with torch.no_grad():
        y = model.double()(pts.reshape(-1, *x.shape))
    model.float()
    assert bool((y >= lo).all() and (y <= up).all())
