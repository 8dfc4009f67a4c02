"""A forward pass that builds float32 constants of its own (``torch.ones(...)`` inside
``forward``) cannot run in float64: the attained lower bounds then use the model as it is,
in its own dtype, instead of failing with torch's dtype error."""

from __future__ import annotations

import torch
from torch import nn

import lipbound
from lipbound.jacobian.attained import model64


class OwnConstants(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(6, 12), nn.Linear(6, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x)).view(-1, 3, 4)
        return self.b(torch.einsum("bij,jk->bik", h, torch.ones(4, 2)).flatten(1))


def test_model64_falls_back_to_the_model_when_the_copy_fails_on_a_probe():
    model = OwnConstants().eval()
    probe = torch.rand(1, 6)
    m, dtype = model64(model, probe)
    assert m is model and dtype == torch.float32
    m, dtype = model64(nn.Linear(6, 2).eval(), probe)
    assert dtype == torch.float64 and next(m.parameters()).dtype == torch.float64


def test_lipschitz_of_a_model_with_float32_constants():
    model, x = OwnConstants().eval(), torch.rand(6)
    res = lipbound.local_lipschitz(model, x, 0.05)
    assert (res.lower <= res.upper).all() and (res.lower > 0).all()
    pts = (x + 0.05 * (2 * torch.rand(500, 6) - 1)).requires_grad_(True)
    (g,) = torch.autograd.grad(model(pts)[:, 0].sum(), pts)
    assert float(g.abs().sum(1).max()) <= float(res.upper[0]) * (1 + 1e-6)
