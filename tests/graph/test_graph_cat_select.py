"""Concatenation with constants (a ViT's cls token) and ``select`` (``x[:, 0]``) in traced
graphs: the graph reproduces the model in float64, and CROWN bounds and the Jacobian bounds
contain sampled outputs and autograd gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lipbound
from lipbound.errors import UnsupportedOperationError
from lipbound.graph.trace import trace
from tests.conftest import evaluate_graph


class ClsNet(nn.Module):
    """[c0; x; c1] along tokens, then the first and the last token (select), tanh, a head."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c0 = nn.Parameter(torch.randn(1, 1, 4, generator=g))
        self.c1 = nn.Parameter(torch.randn(1, 2, 4, generator=g))
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(8, 3)

    def forward(self, x):  # [B, 3, 4]
        B = x.shape[0]
        t = torch.cat([self.c0.expand(B, -1, -1), self.fc(x), self.c1.expand(B, -1, -1)],
                      dim=1)
        t = torch.tanh(t)
        return self.head(torch.cat([t[:, 0], t[:, -1] + t[:, 2]], dim=-1))


def test_cat_with_constants_and_select_reproduce_the_model():
    model = ClsNet().eval()
    graph = trace(model, torch.zeros(1, 3, 4))
    x = torch.randn(7, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        want = copy.deepcopy(model).double()(x)
    torch.testing.assert_close(evaluate_graph(graph, x)[graph.output], want, rtol=1e-12,
                               atol=1e-12)


def test_cat_with_constants_bounds_contain_samples_and_gradients():
    model = ClsNet().eval().double()
    x0 = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    eps = 0.1
    lo, up = lipbound.output_bounds(model, x0, eps, method="crown")
    jlo, jup = lipbound.jacobian_bounds(model, x0, eps)
    g = torch.Generator().manual_seed(2)
    pts = (x0 + eps * (2 * torch.rand(2000, 3, 4, generator=g, dtype=torch.float64) - 1)
           ).requires_grad_(True)
    y = model(pts)
    assert ((y >= lo) & (y <= up)).all()
    for k in range(3):
        grad = torch.autograd.grad(y[:, k].sum(), pts, retain_graph=True)[0]
        assert ((grad >= jlo[k]) & (grad <= jup[k])).all()
    # the constant rows carry no input: their bounds are not inflated by the cat
    assert (up - lo).max() < 10 * eps


def test_cat_of_a_batch_varying_constant_is_refused():
    class Net(nn.Module):
        def forward(self, x):
            c = torch.arange(x.shape[0], dtype=x.dtype).reshape(-1, 1, 1).expand(-1, 1, 4)
            return torch.cat([c, x], dim=1).flatten(1)

    with pytest.raises(UnsupportedOperationError):
        trace(Net().eval(), torch.zeros(1, 3, 4))
