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


class _Residual(nn.Module):
    """conv -> relu -> conv + skip -> relu -> linear: coefficients of two consumers meet."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv2d(2, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(48, 3)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        return self.fc(torch.relu(self.c2(h) + h).flatten(1))


def _cases(n: int = 3):
    for seed in range(n):
        g = torch.Generator().manual_seed(100 + seed)
        yield _mlp(seed), torch.rand(1, 6, generator=g), 0.05
        yield _cnn(seed), torch.rand(1, 1, 8, 8, generator=g), 0.02
        yield _Residual(seed).eval(), torch.rand(1, 2, 4, 4, generator=g), 0.05


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


def test_alpha_crown_float32_optimises_like_float64_on_residual_nets():
    """The float32 path's gradients reach the optimised slopes (a bias update that dropped
    its autograd graph at a residual sum once left alpha-CROWN at the CROWN bound)."""
    for seed in range(2):
        model = _Residual(seed).eval()
        x = torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(seed))
        a = lipbound.output_bounds(model, x, 0.05, method="alpha-crown", iterations=10,
                                   precision="float32")
        b = lipbound.output_bounds(model, x, 0.05, method="alpha-crown", iterations=10)
        c = lipbound.output_bounds(model, x, 0.05, method="crown")
        wa, wb, wc = (t.upper - t.lower for t in (a, b, c))
        assert ((wa - wb) / wb).max() < 1e-3
        assert (wa < wc).any()  # the optimisation did something
        with torch.no_grad():
            y = model.double()(_samples(x, 0.05))
            model.float()
        assert (y >= a.lower).all() and (y <= a.upper).all()


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


class _CancellingSkip(nn.Module):
    """h = relu(W1 x + b1) (stable: huge b1, so |h| ~ 1e4), y = w3 (B h + h) with
    B = -0.37 I + small: the float32 sum of the coefficients of h from the skip and from B
    rounds (it is no exact Sterbenz difference), and |h| magnifies the rounding."""

    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = 8
        self.l1 = nn.Linear(d, d).double()
        self.l2 = nn.Linear(d, d, bias=False).double()
        self.l3 = nn.Linear(d, 1, bias=False).double()
        with torch.no_grad():
            self.l1.weight.copy_(torch.randn(d, d, generator=g, dtype=torch.float64))
            self.l1.bias.fill_(1e4)
            self.l2.weight.copy_(-0.37 * torch.eye(d, dtype=torch.float64)
                                 + 1e-3 * torch.randn(d, d, generator=g, dtype=torch.float64))
            self.l3.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))

    def forward(self, x):
        h = torch.relu(self.l1(x))
        return self.l3(self.l2(h) + h)

    def exact_sup(self, x0: torch.Tensor, eps: float) -> Fraction:
        d = 8
        W1 = [[Fraction(v) for v in r] for r in self.l1.weight.tolist()]
        b1 = [Fraction(v) for v in self.l1.bias.tolist()]
        B = [[Fraction(v) + (1 if i == j else 0) for j, v in enumerate(r)]
             for i, r in enumerate(self.l2.weight.tolist())]
        w3 = [Fraction(v) for v in self.l3.weight[0].tolist()]
        a = [sum(w3[i] * B[i][k] for i in range(d)) for k in range(d)]  # w3 (B + I)
        v = [sum(a[k] * W1[k][j] for k in range(d)) for j in range(d)]
        c = sum(a[k] * b1[k] for k in range(d))
        return c + sum(vj * Fraction(x) for vj, x in zip(v, x0[0].tolist())) \
            + Fraction(eps) * sum(abs(vj) for vj in v)


def test_summed_coefficients_keep_the_bound_sound(monkeypatch):
    """Lemma 3: where the coefficients of two consumers meet, their float32 sum's rounding
    is accounted for; without it (naive) some of these cases are violated."""
    cases = []
    for seed in range(12):
        net = _CancellingSkip(seed).eval()
        x0 = torch.rand(1, 8, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64)
        cases.append((net, x0, 1e-3, net.exact_sup(x0, 1e-3)))
    for net, x0, eps, exact in cases:
        assert Fraction(_crown32(net, x0, eps)) >= exact
    with monkeypatch.context() as mp:
        mp.setattr(mixed, "rounding_bias", lambda *a: 0.0)
        naive = [Fraction(_crown32(net, x0, eps)) < exact for net, x0, eps, exact in cases]
    assert any(naive), "no case where the coefficient sum's rounding matters"


@pytest.mark.parametrize("kind", ["linear", "conv_transpose", "conv"])
def test_float32_kernels_obey_the_sum_error_bound(kind):
    """Lemma 1's assumption about the kernels in use: every computed entry of a float32
    product / (transposed) convolution is within gamma_n(u) of the exact sum of its
    products' magnitudes (it would fail for TF32 or FFT/Winograd kernels)."""
    g = torch.Generator().manual_seed(3)
    u = 2.0 ** -24
    if kind == "linear":
        A = torch.randn(64, 300, generator=g)
        W = torch.randn(300, 200, generator=g)
        out, exact, n = A @ W, A.double() @ W.double(), 300
        mag = A.double().abs() @ W.double().abs()
    else:
        A = torch.randn(16, 32, 9, 9, generator=g)
        W = torch.randn(32, 16, 3, 3, generator=g)
        fn = torch.nn.functional.conv_transpose2d if kind == "conv_transpose" \
            else torch.nn.functional.conv2d
        W = W if kind == "conv_transpose" else W.transpose(0, 1).contiguous()
        out, exact = fn(A, W), fn(A.double(), W.double())
        mag = fn(A.double().abs(), W.double().abs())
        n = 32 * 9
    g_n = n * u / (1 - n * u)
    assert ((out.double() - exact).abs() <= g_n * mag * (1 + 1e-6)).all()


def test_precision_is_validated():
    net = _mlp(0)
    x = torch.rand(1, 6)
    with pytest.raises(InputError, match="precision"):
        lipbound.output_bounds(net, x, 0.1, precision="float16")
    with pytest.raises(InputError, match="precision"):
        lipbound.local_lipschitz(net, x, 0.1, precision=32)
