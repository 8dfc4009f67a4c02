"""The six models users bring (issue 17) bound end to end.

For each model of :mod:`tests.user_models`: ``output_bounds(method="crown")`` contains the
outputs at sampled points of the ball (the float64 real function and the model's own float32
forward pass), ``local_lipschitz(method="crown")`` is at least the gradient norm at every
sampled point, and ``jacobian_bounds`` at eps = 0 contain the autograd Jacobian. A tiny
attention block written with ``F.scaled_dot_product_attention`` is bounded too.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lipbound
from tests.user_models import user_models

EPS = 0.02
MODELS = user_models()


def _points(x: torch.Tensor, eps: float, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, *x.shape, generator=g, dtype=torch.float64) * 2 - 1
    v = torch.randint(0, 2, (n // 2, *x.shape), generator=g).to(torch.float64) * 2 - 1
    return x.double().unsqueeze(0) + eps * torch.cat([torch.zeros(1, *x.shape,
                                                                  dtype=torch.float64), u, v])


def _grads(model: nn.Module, pts: torch.Tensor) -> torch.Tensor:
    p = pts.clone().requires_grad_(True)
    y = model(p)
    return torch.stack([torch.autograd.grad(y[:, k].sum(), p, retain_graph=True)[0]
                        for k in range(y.shape[1])])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_user_model_output_bounds_contain_samples(name):
    model, x = MODELS[name]
    lo, up = lipbound.output_bounds(model, x, EPS, method="crown")
    assert torch.isfinite(lo).all() and torch.isfinite(up).all()
    pts = _points(x, EPS, 300)
    with torch.no_grad():
        y32 = model(pts.float()).double()
        y64 = copy.deepcopy(model).double()(pts)
    for y in (y64, y32):
        assert (y >= lo).all() and (y <= up).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_user_model_lipschitz_dominates_sampled_gradients(name):
    model, x = MODELS[name]
    r = lipbound.local_lipschitz(model, x, EPS, method="crown")
    assert torch.isfinite(r.upper).all()
    G = _grads(copy.deepcopy(model).double(), _points(x, EPS, 150, 1))
    norms = G.flatten(2).abs().sum(-1).max(1).values
    assert (norms <= r.upper).all()
    assert (r.lower <= r.upper).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_user_model_jacobian_at_a_point_contains_autograd(name):
    model, x = MODELS[name]
    lo, up = lipbound.jacobian_bounds(model, x, 0.0)
    J = _grads(copy.deepcopy(model).double(), x.double().unsqueeze(0))[:, 0]
    J = J.reshape(lo.shape)  # the API may read a leading 1 of x as the batch dimension
    assert (J >= lo).all() and (J <= up).all()


class SDPABlock(nn.Module):
    """Two-head attention with F.scaled_dot_product_attention and an additive mask."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.out = nn.Linear(32, 3)
        self.register_buffer("mask", torch.randn(4, 4) * 0.1)

    def forward(self, x):
        q, k, v = (t.reshape(-1, 4, 2, 4).transpose(1, 2)
                   for t in self.qkv(x.reshape(-1, 4, 8)).split(8, -1))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)
        return self.out(o.transpose(1, 2).flatten(1))


def test_scaled_dot_product_attention():
    torch.manual_seed(7)
    model = SDPABlock().eval()
    x = torch.rand(32, generator=torch.Generator().manual_seed(8))
    lo, up = lipbound.output_bounds(model, x, 0.01)
    with torch.no_grad():
        y = copy.deepcopy(model).double()(_points(x, 0.01, 200))
    assert (y >= lo).all() and (y <= up).all()
    jl, ju = lipbound.jacobian_bounds(model, x, 0.0)
    J = _grads(copy.deepcopy(model).double(), x.double().unsqueeze(0))[:, 0]
    assert (J >= jl).all() and (J <= ju).all()
    assert float((ju - jl).max()) < 1e-8 * (1 + math.fabs(float(J.abs().max())))
