"""Method "crown" optimises the forward bounds of a node that the Clarke-Jacobian graph reads
only as signs (the last ReLU layer's pre-activations) only where a sign can still be decided:
a point of the domain where z_i >= 0 (<= 0) keeps u_i >= 0 (l_i <= 0) under any
optimisation (:func:`lipbound.jacobian.bound._sign_witnesses`,
:func:`lipbound.graph.shapes.sign_only_nodes`). Every bound is a CROWN bound either way;
these tests show that nothing the full optimisation decides is lost."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lipbound
from lipbound.graph.shapes import nodes_needing_bounds, sign_only_nodes
from lipbound.inputs import get_traced
from lipbound.jacobian import bound
from lipbound.jacobian.build import jacobian_graph
from lipbound.propagate import intermediate


def _mlp(seed: int) -> tuple[nn.Module, torch.Tensor, float]:
    g = torch.Generator().manual_seed(seed)
    n_in, width, depth = 3 + seed % 4, 12 + 4 * (seed % 3), 2 + seed % 2
    layers: list[nn.Module] = []
    d = n_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    net = nn.Sequential(*layers, nn.Linear(d, 3)).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / p.shape[-1] ** 0.5)
    x0 = torch.randn(1, n_in, generator=g, dtype=torch.float64)
    return net, x0, 0.1 + 0.05 * (seed % 4)


def _cnn() -> tuple[nn.Module, torch.Tensor, float]:
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                        nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
    return net, torch.rand(1, 1, 9, 9, dtype=torch.float64), 0.05


CASES = [_mlp(s) for s in range(8)] + [_cnn()]


def test_only_the_last_pre_activations_are_sign_only():
    """In the joint graph of an MLP (and of a CNN) the last ReLU layer's input is the one
    node whose bounds matter only through their signs; earlier ones feed later bounds."""
    for net, x0, _ in (CASES[1], CASES[-1]):
        graph = get_traced(net, x0, torch.float64, x0.device).graph
        jg = jacobian_graph(graph, torch.eye(3, dtype=torch.float64), 2.0)
        pre = nodes_needing_bounds(graph)
        got = sign_only_nodes(jg.graph, pre, [jg.gradient, jg.norm])
        assert got == {pre[-1]}, (pre, got)


def _values() -> list[float]:
    return [lipbound.local_lipschitz(net, x0, eps, method="crown", n_samples=1).value
            for net, x0, eps in CASES]


def test_witnesses_lose_nothing_the_full_optimisation_decides(monkeypatch):
    """With the early stop off (every row optimised the same number of steps, so the rows
    left out change nothing else), the crown Lipschitz bounds with and without the skipped
    sides agree on a seeded family of MLPs and a small CNN, and sides were skipped."""
    skipped = []
    real = intermediate._decidable_sides

    def spy(*args):
        sides = real(*args)
        skipped.append(int((~sides).sum()))
        return sides

    monkeypatch.setattr(bound, "FORWARD_STOP_REL", None)
    with monkeypatch.context() as m:
        m.setattr(intermediate, "_decidable_sides", spy)
        with_w = _values()
    monkeypatch.setattr(bound, "_sign_witnesses", lambda *args: None)
    without = _values()
    assert sum(skipped) > 0
    for a, b in zip(with_w, without):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
