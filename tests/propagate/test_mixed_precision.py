"""precision="float32": CROWN coefficients in float32 with the per-step rounding allowance of
:mod:`lipbound.propagate.mixed`. Sampled outputs and gradient norms stay inside the bounds,
the bounds are only slightly wider than float64's, and adversarial cancellation cases (whose
naive float32 bound, without the allowance, is violated by the exact value) stay sound."""

from __future__ import annotations

import math
import statistics
from fractions import Fraction

import pytest
import torch
from torch import nn

import lipbound
from lipbound.bounds.domains import LpBall
from lipbound.errors import InputError
from lipbound.graph.trace import trace
from lipbound.propagate import mixed
from lipbound.propagate.crown import crown_upper
from lipbound.propagate.driver import prepare_state
from lipbound.propagate.state import coefficient_dtype


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(),
                         nn.Linear(16, 3)).eval()


def _cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6, 3)).eval()


def _cases(n: int = 3):
    for seed in range(n):
        g = torch.Generator().manual_seed(100 + seed)
        yield _mlp(seed), torch.rand(1, 6, generator=g), 0.05
        yield _cnn(seed), torch.rand(1, 1, 8, 8, generator=g), 0.02


def _samples(x: torch.Tensor, eps: float, n: int = 400) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    d = (2 * torch.rand(n, *x.shape[1:], generator=g, dtype=torch.float64) - 1) * eps
    d[: n // 4] = d[: n // 4].sign() * eps  # vertices
    return x.double() + d


def test_sampled_outputs_inside_float32_bounds_and_close_to_float64():
    widen = []
    for model, x, eps in _cases():
        b32 = lipbound.output_bounds(model, x, eps, precision="float32")
        b64 = lipbound.output_bounds(model, x, eps)
        pts = _samples(x, eps)
        with torch.no_grad():
            y = model.double()(pts)
            model.float()
        assert (y >= b32.lower).all() and (y <= b32.upper).all()
        w32, w64 = b32.upper - b32.lower, b64.upper - b64.lower
        widen += ((w32 - w64) / w64).tolist()
    assert statistics.median(widen) < 1e-3, statistics.median(widen)
    assert max(widen) < 2e-2, max(widen)


@pytest.mark.parametrize("method", ["crown", pytest.param("alpha-crown", marks=pytest.mark.slow)])
def test_sampled_gradient_norms_inside_float32_lipschitz_bounds(method):
    widen = []
    for model, x, eps in _cases(1):
        r32 = lipbound.local_lipschitz(model, x, eps, method=method, precision="float32",
                                       iterations=5, n_samples=8)
        r64 = lipbound.local_lipschitz(model, x, eps, method=method, iterations=5,
                                       n_samples=8)
        m = model.double()
        pts = _samples(x, eps, 60).requires_grad_(True)
        y = m(pts)
        for s in range(y.shape[1]):
            g, = torch.autograd.grad(y[:, s].sum(), pts, retain_graph=True)
            q1 = g.flatten(1).abs().sum(1)  # l_inf ball: dual l_1 norm
            assert (q1 <= r32.upper[s]).all()
        model.float()
        widen += ((r32.upper - r64.upper) / r64.upper).tolist()
    assert statistics.median(widen) < 5e-3, statistics.median(widen)


def _cancelling_net(seed: int) -> nn.Module:
    """A stable ReLU net (huge positive bias) whose float64 weights are not float32 numbers
    and whose second layer nearly cancels the first: w2 W1 is small next to |w2| |W1|."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(12, 12, generator=g, dtype=torch.float64)
    w2 = torch.randn(1, 12, generator=g, dtype=torch.float64)
    w2 = w2 - (w2 @ w1) @ torch.linalg.pinv(w1) * (1 - 1e-3)  # w2 W1 shrunk 1000-fold
    net = nn.Sequential(nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 1)).double().eval()
    with torch.no_grad():
        net[0].weight.copy_(w1 * 1e3)
        net[0].bias.fill_(1e5)
        net[2].weight.copy_(w2)
        net[2].bias.zero_()
    return net


def _exact_sup(net: nn.Module, x0: torch.Tensor, eps: float) -> Fraction:
    """sup of the (linear, ReLUs stably on) net over the l_inf ball, in exact arithmetic."""
    W1 = [[Fraction(v) for v in row] for row in net[0].weight.tolist()]
    b1 = [Fraction(v) for v in net[0].bias.tolist()]
    w2 = [Fraction(v) for v in net[2].weight[0].tolist()]
    v = [sum(w2[i] * W1[i][j] for i in range(12)) for j in range(12)]
    c = sum(w2[i] * b1[i] for i in range(12)) + Fraction(net[2].bias.item())
    return c + sum(vj * Fraction(x) for vj, x in zip(v, x0[0].tolist())) \
        + Fraction(eps) * sum(abs(vj) for vj in v)


def _crown32(net, x0, eps):
    graph = trace(net, x0)
    dom = LpBall(x0, torch.tensor([eps], dtype=torch.float64), math.inf)
    A = torch.ones(1, 1, 1, dtype=torch.float64)
    with coefficient_dtype(torch.float32), torch.no_grad():
        state = prepare_state(graph, dom, "crown")
        assert mixed.active(state, torch.float64)
        return crown_upper(state, graph.output, A)[0, 0].item()


def test_cancellation_cases_are_adversarial_and_the_allowance_keeps_them_sound(monkeypatch):
    cases = []
    for seed in range(12):
        net = _cancelling_net(seed)
        x0 = torch.rand(1, 12, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64)
        cases.append((net, x0, 1.0, _exact_sup(net, x0, 1.0)))
    for net, x0, eps, exact in cases:  # the bound before the final outward widening
        assert Fraction(_crown32(net, x0, eps)) >= exact
    with monkeypatch.context() as mp:  # naive float32: no rounding allowance
        mp.setattr(mixed, "_abs_dot", lambda A, M, n, u, coeff: 0.0)
        naive = [Fraction(_crown32(net, x0, eps)) < exact for net, x0, eps, exact in cases]
    assert any(naive), "no case where naive float32 propagation is violated"


def test_precision_is_validated():
    net = _mlp(0)
    x = torch.rand(1, 6)
    with pytest.raises(InputError, match="precision"):
        lipbound.output_bounds(net, x, 0.1, precision="float16")
    with pytest.raises(InputError, match="precision"):
        lipbound.local_lipschitz(net, x, 0.1, precision=32)
