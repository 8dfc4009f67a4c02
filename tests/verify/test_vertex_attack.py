"""verify's attacks take vertex steps before PGD (attack.box_minimize, attack.vertex_minimize).

The network's violation along the mean s of its 16 inputs on [-1, 1]^16 is
1 - 0.5 s + 3 relu(s - 0.2) - 40 relu(s - 0.9): a basin at s = 0.2 (0.9 > 0) that small PGD
steps settle in from the centre and from random starts, and counterexamples only near the
all-ones vertex (s > 0.96). The linearisation at the centre points at that vertex, so one
vertex step reaches it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lipbound.attack
from lipbound.attack import pgd_minimize
from lipbound.io.vnnlib import Conjunction, InputRegion
from lipbound.verify.falsify import Checker, attack

N = 16


def ridge_net() -> nn.Module:
    first = nn.Linear(N, 3)
    first.weight.data = torch.full((3, N), 1.0 / N)
    first.bias.data = torch.tensor([1.0, -0.2, -0.9])
    out = nn.Linear(3, 1)
    out.weight.data = torch.tensor([[-0.5, 3.0, -40.0]])
    out.bias.data = torch.tensor([1.5])
    return nn.Sequential(first, nn.ReLU(), out).eval()


def region() -> InputRegion:
    unsafe = Conjunction(torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    return InputRegion(-torch.ones(N, dtype=torch.float64), torch.ones(N, dtype=torch.float64),
                       (unsafe,))


def test_vertex_steps_find_the_counterexample_that_pgd_misses():
    net, reg = ridge_net(), region()
    found = attack(net, reg, (N,), Checker(net, (N,)), steps=100, restarts=16,
                   generator=torch.Generator().manual_seed(0))
    assert found is not None
    x, y = found
    assert reg.contains(x) and reg.is_counterexample(x, y) and float(x.mean()) > 0.96


def test_pgd_alone_settles_in_the_basin():
    """Why the vertex steps are there: the same attack with PGD only ends in the basin."""
    net = ridge_net()
    lo, up = -torch.ones(N), torch.ones(N)
    _, v = pgd_minimize(lambda z: net(z)[:, 0], lo, up, steps=100, restarts=16,
                        generator=torch.Generator().manual_seed(0))
    assert v > 0.5


def test_minimize_keeps_the_better_of_both(monkeypatch):
    """Without vertex steps (a mutation of VERTEX_STEPS) the attack finds nothing here."""
    monkeypatch.setattr(lipbound.attack, "VERTEX_STEPS", 0)
    net, reg = ridge_net(), region()
    found = attack(net, reg, (N,), Checker(net, (N,)), steps=100, restarts=16,
                   generator=torch.Generator().manual_seed(0))
    assert found is None


def _ridge_classifier() -> nn.Module:
    """Two classes, logits (0, -v(x)): class 1 wins exactly where the ridge net's v(x) < 0."""
    head = nn.Linear(1, 2)
    head.weight.data = torch.tensor([[0.0], [-1.0]])
    head.bias.data = torch.zeros(2)
    return nn.Sequential(ridge_net(), head).eval()


@pytest.mark.parametrize("vertex_steps", [10, 0])
def test_margin_attack_reaches_the_vertex_only_with_vertex_steps(monkeypatch, vertex_steps):
    """The robustness audit's l_inf attack runs the same box attack: with vertex steps it finds
    the misclassified corner of the ball of radius 1 around 0; without them (mutation) it
    does not."""
    monkeypatch.setattr(lipbound.attack, "VERTEX_STEPS", vertex_steps)
    model = _ridge_classifier()
    xa = lipbound.attack.margin_attack(model, torch.zeros(N), 0, 1.0,
                                       generator=torch.Generator().manual_seed(0))
    if vertex_steps:
        assert xa is not None and int(model(xa[None]).argmax()) == 1
        assert float(xa.abs().max()) <= 1.0
    else:
        assert xa is None
