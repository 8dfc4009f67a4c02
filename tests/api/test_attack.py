"""PGD attacks: points stay in the domain and find the closed-form adversary of a linear model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lipbound.attack import margin_attack, pgd_minimize, vertex_minimize


def _linear_classifier() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    lin = nn.Linear(5, 2).double().eval()
    x = torch.randn(5, dtype=torch.float64)
    return lin, x


def _radius(lin: nn.Linear, x: torch.Tensor, label: int, q: float) -> float:
    """Exact distance (in the norm dual to q) from x to the decision boundary of a 2-class net."""
    w = (lin.weight[label] - lin.weight[1 - label]).detach()
    b = (lin.bias[label] - lin.bias[1 - label]).detach()
    return float((w @ x + b) / torch.linalg.vector_norm(w, ord=q))


@pytest.mark.parametrize("norm,q", [(math.inf, 1.0), (2.0, 2.0)])
def test_margin_attack_matches_closed_form_radius(norm, q):
    lin, x = _linear_classifier()
    label = int(lin(x).argmax())
    r = _radius(lin, x, label, q)
    g = torch.Generator().manual_seed(1)
    assert margin_attack(lin, x, label, 0.98 * r, norm=norm, generator=g) is None
    xa = margin_attack(lin, x, label, 1.05 * r, norm=norm, generator=g)
    assert xa is not None and int(lin(xa).argmax()) != label
    dist = torch.linalg.vector_norm(xa - x, ord=norm)
    assert dist <= 1.05 * r + 1e-9


def test_pgd_minimize_stays_in_box_and_finds_corner():
    lo, up = torch.tensor([-1.0, 0.0, 2.0]), torch.tensor([1.0, 0.5, 3.0])
    w = torch.tensor([1.0, -2.0, 0.5])
    xb, v = pgd_minimize(lambda z: z @ w, lo, up, steps=20, restarts=3,
                         generator=torch.Generator().manual_seed(0))
    assert torch.all(xb >= lo) and torch.all(xb <= up)
    assert v == pytest.approx(float(torch.where(w > 0, lo, up) @ w))


def test_margin_attack_respects_data_range():
    lin, x = _linear_classifier()
    x = x.clamp(-0.5, 0.5)
    label = int(lin(x).argmax())
    xa = margin_attack(lin, x, label, 10.0, data_range=(-0.5, 0.5),
                       generator=torch.Generator().manual_seed(0))
    if xa is not None:
        assert xa.min() >= -0.5 and xa.max() <= 0.5


def test_vertex_minimize_reaches_the_best_vertex_of_a_linear_objective():
    """One vertex step from anywhere lands on argmin over the box of w.x; zero weights keep
    their coordinate."""
    lo, up = torch.tensor([-1.0, 0.0, 2.0, -3.0]), torch.tensor([1.0, 0.5, 3.0, 3.0])
    w = torch.tensor([1.0, -2.0, 0.5, 0.0])
    xb, v = vertex_minimize(lambda z: z @ w, lo, up, steps=1, restarts=4,
                            generator=torch.Generator().manual_seed(0))
    assert torch.equal(xb[:3], torch.where(w > 0, lo, up)[:3]) and xb[3] == 0.0
    assert v == pytest.approx(float(xb @ w))


def test_vertex_minimize_points_stay_in_the_box_and_report_their_value():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 1)).double().eval()
    lo, up = -torch.rand(6, dtype=torch.float64), torch.rand(6, dtype=torch.float64)
    starts = lo + torch.rand(3, 6, dtype=torch.float64) * (up - lo)
    xb, v = vertex_minimize(lambda z: net(z)[:, 0], lo, up, steps=5, restarts=8,
                            x_init=starts, generator=torch.Generator().manual_seed(0))
    assert torch.all(xb >= lo) and torch.all(xb <= up)
    with torch.no_grad():
        assert v == float(net(xb[None])[0, 0])
        assert v <= float(net(starts)[:, 0].min())
