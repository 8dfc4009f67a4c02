"""CROWN bounds carry their own rounding (lipbound.propagate.own_rounding): checked against
the exact rational value of tiny nets whose float sums cancel badly, under permuted
summation orders, and against a float64 forward pass on a deep residual net."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from lipbound.bounds.domains import LpBall
from lipbound.inputs import get_traced
from lipbound.propagate import own_rounding
from lipbound.propagate.driver import bound_graph_spec, prepare_state


def _cancelling_net(seed: int, perm: torch.Tensor | None = None) -> nn.Sequential:
    """Linear-ReLU-Linear-ReLU-Linear in float64 with weights ~1e6 whose output is O(1):
    the float sums of its bound lose about 1e-10 (relative 1e-16 of 1e6 * 1e6 / scale)."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(),
                        nn.Linear(6, 1)).double().eval()
    with torch.no_grad():
        for lin in (net[0], net[2], net[4]):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=torch.float64)
                             * 1e3 * (1 + torch.rand(lin.weight.shape, generator=g,
                                                     dtype=torch.float64)))
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g, dtype=torch.float64) * 1e3)
        net[0].bias.add_(1e4)  # the first layer's units are active near the centre
        if perm is not None:  # the same function, other summation orders
            net[0].weight.copy_(net[0].weight[perm])
            net[0].bias.copy_(net[0].bias[perm])
            net[2].weight.copy_(net[2].weight[:, perm])
    return net


def _exact(net: nn.Sequential, x: list[Fraction]) -> Fraction:
    """The real-arithmetic output of ``net`` at x, in rationals."""
    v = x
    for layer in net:
        if isinstance(layer, nn.ReLU):
            v = [max(t, Fraction(0)) for t in v]
            continue
        W = [[Fraction(float(w)) for w in row] for row in layer.weight.tolist()]
        b = [Fraction(0)] * len(W) if layer.bias is None else \
            [Fraction(float(t)) for t in layer.bias.tolist()]
        v = [sum((w * t for w, t in zip(row, v)), Fraction(0)) + bi for row, bi in zip(W, b)]
    return v[0]


def _bounds(net: nn.Sequential, x0: torch.Tensor, eps: float):
    traced = get_traced(net, x0.unsqueeze(0), torch.float64, x0.device)
    domain = LpBall(x0.unsqueeze(0), torch.tensor([eps], dtype=torch.float64), math.inf)
    state = prepare_state(traced.graph, domain, "crown")
    C = torch.ones(1, 1, dtype=torch.float64)
    lo, up = bound_graph_spec(state, traced.graph.output, C.unsqueeze(0), "crown")
    return Fraction(float(lo[0, 0])), Fraction(float(up[0, 0]))


def _corners(x0: torch.Tensor, eps: float) -> list[list[Fraction]]:
    pts = []
    for signs in itertools.product((-1, 0, 1), repeat=x0.numel()):
        pts.append([Fraction(float(c)) + s * Fraction(eps) for c, s in zip(x0.tolist(), signs)])
    return pts


def _violations(seeds, eps: float, perms: int = 3) -> int:
    """How many (seed, summation order, corner) cases put the exact value outside the
    CROWN bounds."""
    bad = 0
    for seed in seeds:
        x0 = torch.randn(3, generator=torch.Generator().manual_seed(100 + seed),
                         dtype=torch.float64)
        g = torch.Generator().manual_seed(seed)
        for k in range(perms):
            perm = torch.randperm(6, generator=g) if k else None
            net = _cancelling_net(seed, perm)
            lo, up = _bounds(net, x0, eps)
            bad += sum(not lo <= _exact(net, p) <= up for p in _corners(x0, eps))
    return bad


def test_crown_bounds_contain_the_exact_value_under_any_summation_order():
    """Certified CROWN bounds (with their own rounding) contain the rational value of the
    net at every corner and the centre of the box, for nets whose sums cancel 1e7-fold,
    each under three summation orders (permuted hidden units)."""
    assert _violations(range(12), eps=1e-12) == 0


def test_without_the_tally_the_exact_value_escapes():
    """The same family with the allowance switched off: the bounds miss the exact value
    (so the tally is what makes the test above pass)."""
    with own_rounding.disabled():
        assert _violations(range(12), eps=1e-12) > 0


def _coefficient_cancelling_net(seed: int) -> nn.Sequential:
    """Linear-ReLU-Linear whose back-substituted input coefficient W1^T w2 cancels: the rows
    of W1 are ~1e4 and nearly equal, w2 sums to about 0, the ReLUs are stably active. The
    rounding of the computed coefficient (paired with x ~ 10) dominates the bound's error,
    far above what the concretisation's own rounding allows for."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1, bias=False)).double().eval()
    with torch.no_grad():
        base = torch.randn(1, 3, generator=g, dtype=torch.float64) * 1e4
        net[0].weight.copy_(base + torch.randn(8, 3, generator=g, dtype=torch.float64))
        net[0].bias.fill_(1e6)
        w = torch.randn(8, generator=g, dtype=torch.float64) * 1e2
        w[-1] = -w[:-1].sum()
        net[2].weight.copy_(w.reshape(1, 8))
    return net


def _coefficient_violations(seeds) -> int:
    bad = 0
    for seed in seeds:
        net = _coefficient_cancelling_net(seed)
        x0 = torch.randn(3, generator=torch.Generator().manual_seed(100 + seed),
                         dtype=torch.float64) * 10
        lo, up = _bounds(net, x0, 1e-12)
        bad += sum(not lo <= _exact(net, p) <= up for p in _corners(x0, 1e-12))
    return bad


def test_coefficient_rounding_is_covered(monkeypatch):
    """The per-step terms (the coefficients' rounding) are what keeps the exact value in
    the bounds of the coefficient-cancelling family: with them the bounds contain it at
    every corner; with the step terms dropped (mutation) they miss it."""
    assert _coefficient_violations(range(10)) == 0
    monkeypatch.setattr(own_rounding.Tally, "step", lambda self, *args: None)
    assert _coefficient_violations(range(10)) > 0


def test_tally_is_small_against_the_width():
    """On an ordinary net the allowance is a tiny part of the CROWN width (not the global
    magnitude bound): a 6-block residual MLP at eps 1e-3."""
    g = torch.Generator().manual_seed(0)

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(16, 16), nn.ReLU(),
                                                      nn.Linear(16, 16)) for _ in range(6))
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            for b in self.blocks:
                x = x + b(x)
            return self.head(x)

    net = Res().double().eval()
    x0 = torch.randn(16, generator=g, dtype=torch.float64)
    traced = get_traced(net, x0.unsqueeze(0), torch.float64, x0.device)
    domain = LpBall(x0.unsqueeze(0), torch.tensor([1e-3], dtype=torch.float64), math.inf)
    C = torch.eye(3, dtype=torch.float64).unsqueeze(0)
    state = prepare_state(traced.graph, domain, "crown")
    lo, up = bound_graph_spec(state, traced.graph.output, C, "crown")
    with own_rounding.disabled():
        state = prepare_state(traced.graph, domain, "crown")
        lo0, up0 = bound_graph_spec(state, traced.graph.output, C, "crown")
    assert bool((up >= up0).all() and (lo <= lo0).all())
    extra = float(((up - lo) - (up0 - lo0)).max())
    assert 0 < extra < 1e-9 * float((up0 - lo0).min())
    xs = domain.sample(2000, generator=g)[:, 0]
    with torch.no_grad():
        ys = net(xs)
    assert bool((ys >= lo).all() and (ys <= up).all())


@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_output_bounds_contain_the_exact_value(method):
    """Through the public API too (both CROWN methods), on the cancelling family."""
    import lipbound

    for seed in range(4):
        net = _cancelling_net(seed)
        x0 = torch.randn(3, generator=torch.Generator().manual_seed(100 + seed),
                         dtype=torch.float64)
        lo, up = lipbound.output_bounds(net, x0, 1e-12, method=method, iterations=3,
                                        progress=False)
        for p in _corners(x0, 1e-12):
            assert Fraction(float(lo[0])) <= _exact(net, p) <= Fraction(float(up[0]))


def test_alpha_crown_bounds_carry_their_allowance():
    """alpha-CROWN optimises untallied bounds and returns one tallied pass with each row's
    best parameters: every row of its result lies strictly above the same computation with
    the allowance switched off (mutation: an untallied final pass makes the rows alpha
    improved equal to it)."""
    from lipbound.propagate.alpha import alpha_crown_upper

    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                        nn.Linear(16, 3)).double().eval()
    x0 = torch.randn(4, generator=g, dtype=torch.float64)
    traced = get_traced(net, x0.unsqueeze(0), torch.float64, x0.device)
    domain = LpBall(x0.unsqueeze(0), torch.tensor([0.3], dtype=torch.float64), math.inf)
    C = torch.cat([torch.eye(3), -torch.eye(3)]).to(torch.float64).unsqueeze(0)
    state = prepare_state(traced.graph, domain, "crown")
    out = traced.graph.output
    tallied = alpha_crown_upper(state, out, C, iterations=10)
    with own_rounding.disabled():  # same intermediate bounds, same iterates
        plain = alpha_crown_upper(state, out, C, iterations=10)
        crown0 = bound_graph_spec(state, out, C[:, :3], "crown")[1]
    assert bool((plain[:, :3] < crown0 - 1e-9).any())  # alpha improved some rows
    assert bool((tallied > plain).all())
