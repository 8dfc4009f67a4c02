"""CROWN maps a coefficient shared by the whole batch (an expanded tensor) through linear ops
once; the bound must equal the one computed from a materialised copy."""

from __future__ import annotations

import torch

from lipbound.bounds.domains import LpBall
from lipbound.graph.trace import trace
from lipbound.propagate.crown import crown_upper
from lipbound.propagate.driver import prepare_state
from tests.models import mlp


def test_expanded_and_materialised_coefficients_give_the_same_bound():
    net = mlp((5, 7, 6, 3)).double()
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    graph = trace(net, x[:1])
    dom = LpBall(x, torch.full((4,), 0.3, dtype=torch.float64), float("inf"))
    state = prepare_state(graph, dom)
    rows = torch.randn(1, 2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    shared = rows.expand(4, 2, 3)
    assert shared.stride(0) == 0
    a = crown_upper(state, graph.output, shared)
    b = crown_upper(state, graph.output, shared.contiguous())
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    pts = x.unsqueeze(1) + 0.3 * (2 * torch.rand(4, 500, 5, dtype=torch.float64) - 1)
    y = net(pts.reshape(-1, 5)).reshape(4, 500, 3)
    vals = torch.einsum("bsk,bnk->bns", shared, y)
    assert (vals <= a.unsqueeze(1) + 1e-9).all()
