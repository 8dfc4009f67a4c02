"""Counterfactual stability: exact on linear models, enclosing sampled changes on a ReLU MLP."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lipbound import audit
from tests.models import mlp


def test_linear_model_change_is_exact_and_stability_matches_closed_form():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    x = torch.tensor([0.3, -0.2, 0.5, 0.1])
    W, b = model[0].weight.detach().double(), model[0].bias.detach().double()
    f = W @ x.double() + b
    c = int(f.argmax())
    for eps in (0.01, 1.0):
        r = audit.counterfactual_stability(model, x, eps)
        assert r.prediction == c
        others = [k for k in range(3) if k != c]
        exact = torch.stack([torch.linalg.vector_norm(W[c] - W[k], ord=1) * eps for k in others])
        assert torch.allclose(r.upper_change, exact, rtol=1e-6)
        assert torch.allclose(r.lower_change, exact, rtol=1e-6)  # PGD reaches the corner
        margins = torch.stack([f[c] - f[k] for k in others])
        assert r.stable == bool((margins > exact).all())


def test_relu_mlp_change_encloses_sampled_changes():
    model = mlp((5, 12, 12, 4), seed=1)
    x = torch.rand(5, generator=torch.Generator().manual_seed(0))
    eps = 0.2
    r = audit.counterfactual_stability(model, x, eps, norm=2, output=1)
    assert r.stable is None and r.rows == ["f1"]
    assert float(r.lower_change[0]) <= float(r.upper_change[0])
    assert float(r.upper_change[0]) <= float(r.lipschitz_change[0]) + 1e-12
    g = torch.Generator().manual_seed(1)
    d = torch.randn(2000, 5, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True) * eps * torch.rand(2000, 1, generator=g,
                                                           dtype=torch.float64)
    m64 = model.double()
    with torch.no_grad():
        change = (m64(x.double() + d)[:, 1] - m64(x.double()[None])[0, 1]).abs().max()
    assert float(change) <= float(r.upper_change[0])
    assert math.isfinite(float(r.certified_min[0]))


def test_bad_output_index():
    model = mlp((5, 8, 3), seed=0)
    with pytest.raises(ValueError, match="output"):
        audit.counterfactual_stability(model, torch.zeros(5), 0.1, output=3)
