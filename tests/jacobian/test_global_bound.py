"""Certified global Lipschitz bounds (lipbound.jacobian.global_bound / spectral) and the cap
of local bounds by them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lipbound
from lipbound.global_api import global_lipschitz, margin_lipschitz
from lipbound.jacobian import spectral
from lipbound.jacobian.global_bound import pair_spec

Q = {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}


def _grad_norms(model, xs, C, q):
    """Dual norms [n, S] of the gradients of the rows of C f at the points xs."""
    out = []
    for x in xs:
        x = x.clone().requires_grad_(True)
        y = model(x.unsqueeze(0))[0]
        rows = []
        for c in C:
            (g,) = torch.autograd.grad((c.to(y.dtype) * y).sum(), x, retain_graph=True)
            rows.append(torch.linalg.vector_norm(g.double().flatten(), ord=q))
        out.append(torch.stack(rows))
    return torch.stack(out)


def _mlp(sizes, act, seed):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers[:-1]).double().eval()


# ------------------------------------------------------------------------ spectral norms
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (3, 40), (64, 128), (200, 150)])
def test_gram_bound_is_an_upper_bound_and_tight(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    for scale in (1e-30, 1.0, 1e30):
        m = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale
        exact = float(torch.linalg.matrix_norm(m, ord=2))
        bound = spectral.gram_upper(m)
        assert bound >= exact
        assert bound <= exact * (1 + 1e-6)
        assert spectral.dense_schur_upper(m) >= exact
        assert spectral.spectral_lower(m) <= exact * (1 + 1e-9)


def test_gram_bound_on_equal_singular_values_and_zero():
    eye = torch.eye(50, dtype=torch.float64)
    assert 1.0 <= spectral.gram_upper(eye) <= 1 + 1e-5
    q, _ = torch.linalg.qr(torch.randn(30, 30, dtype=torch.float64))
    assert 1.0 <= spectral.gram_upper(3 * q) / 3 <= 1 + 1e-5
    assert 0.0 <= spectral.gram_upper(torch.zeros(4, 6)) < 1e-100
    assert spectral.gram_upper(torch.tensor([[float("nan")]])) == math.inf


@pytest.mark.parametrize("stride,dilation,groups,padding", [
    (1, 1, 1, 1), (2, 1, 1, 1), (1, 2, 1, 2), (3, 1, 2, 0), (2, 2, 2, 1)])
def test_conv_unfold_bound_covers_the_dense_norm(stride, dilation, groups, padding):
    torch.manual_seed(stride * 10 + dilation + groups)
    conv = nn.Conv2d(4, 6, 3, stride=stride, dilation=dilation, groups=groups,
                     padding=padding, bias=False).double()
    n = 4 * 9 * 9
    with torch.no_grad():
        dense = conv(torch.eye(n, dtype=torch.float64).reshape(n, 4, 9, 9)).reshape(n, -1).T
    exact = float(torch.linalg.matrix_norm(dense, ord=2))
    bound = spectral.conv_unfold_upper(conv.weight, groups, (stride, stride),
                                       (dilation, dilation))
    assert bound >= exact
    # copies: the largest number of output taps reading one input element
    copies = int((dense != 0).sum(0).max()) if groups == 1 else None
    if copies is not None:
        assert spectral.conv_copies((3, 3), (stride, stride), (dilation, dilation)) >= \
            copies / 6


# ------------------------------------------------------------------------ global bounds
@pytest.mark.parametrize("norm", [2, math.inf, 1])
@pytest.mark.parametrize("seed", range(4))
def test_global_bounds_cover_sampled_gradients_of_random_nets(norm, seed):
    gen = torch.Generator().manual_seed(seed)
    depth = 1 + seed % 3
    sizes = [int(torch.randint(2, 24, (1,), generator=gen)) for _ in range(depth + 1)] + [4]
    act = [nn.ReLU, nn.Tanh, lambda: nn.LeakyReLU(0.1), nn.Sigmoid][seed]
    model = _mlp(sizes, act, seed)
    x0 = torch.zeros(sizes[0], dtype=torch.float64)
    g = global_lipschitz(model, x0, norm=norm)
    assert g.upper.shape == (4,)
    xs = 3 * torch.randn(60, sizes[0], generator=gen, dtype=torch.float64)
    grads = _grad_norms(model, xs, torch.eye(4, dtype=torch.float64), Q[float(norm)])
    assert torch.all(grads <= g.upper * (1 + 1e-9))
    pairs = margin_lipschitz(model, x0, norm=norm)
    assert pairs.shape == (4, 4) and torch.all(pairs.diagonal() == 0)
    pg = _grad_norms(model, xs[:20], pair_spec(4), Q[float(norm)]).reshape(20, 4, 4)
    assert torch.all(pg <= pairs * (1 + 1e-9) + 1e-12)


class _SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 2 * 2, 5)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = self.pool(torch.relu(self.c2(x)))
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("norm", [2, math.inf])
def test_global_bounds_cover_sampled_gradients_of_a_cnn(norm):
    model = _SmallCNN().double().eval()
    gen = torch.Generator().manual_seed(1)
    xs = torch.randn(40, 1, 8, 8, generator=gen, dtype=torch.float64) * 2
    g = global_lipschitz(model, xs[0], norm=norm)
    grads = _grad_norms(model, xs, torch.eye(5, dtype=torch.float64), Q[float(norm)])
    assert torch.all(grads <= g.upper * (1 + 1e-9))
    # the bound is finite and not absurdly loose on this small net
    assert g.value < 1e3 * float(grads.max())


def test_global_bound_of_the_shipped_cnn_covers_gradients():
    model = lipbound.models.load("digits-cnn")
    gen = torch.Generator().manual_seed(0)
    xs = torch.rand(20, 1, 8, 8, generator=gen)
    g = global_lipschitz(model, xs[0], norm=2)
    grads = _grad_norms(model, xs, torch.eye(10), 2.0)
    assert torch.all(grads <= g.upper.float() * (1 + 1e-6))


def test_global_bound_refuses_unknown_ops():
    from lipbound.errors import UnsupportedOperationError
    from lipbound.graph.ir import Graph, Node

    g = Graph((Node("x", "input", (), (3,)), Node("y", "mul", ("x", "x"), (3,))), "x", "y")
    with pytest.raises(UnsupportedOperationError):
        global_lipschitz(g, torch.zeros(3), norm=2)


# ------------------------------------------------------------------------ local <= global
def test_local_bounds_never_exceed_the_global_bound():
    """The 64-128-128-128-10 ReLU MLP at eps = 1 (l2): CROWN's local bound exceeds the naive
    global product; local_lipschitz reports the smaller one and says so."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                          nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    x = torch.rand(64)
    glob = global_lipschitz(model, x, norm=2, method="fast")
    r = lipbound.local_lipschitz(model, x, 1.0, norm=2, method="crown")
    assert torch.all(r.upper <= glob.upper)
    assert r.details["bound_source"].count("global") >= 1
    assert r.details["global_upper"] == pytest.approx(glob.upper.tolist())
    assert torch.all(r.lower <= r.upper)
    # a small ball: local wins (and is reported as such)
    small = lipbound.local_lipschitz(model, x, 1e-4, norm=2, method="crown")
    assert "local" in small.details["bound_source"]
    assert torch.all(small.upper <= glob.upper)
    # l_inf and spec rows too
    spec = torch.eye(10)[:3] - torch.eye(10)[3:6]
    ri = lipbound.local_lipschitz(model, x, 0.5, norm="inf", spec=spec, method="ibp")
    gi = global_lipschitz(model, x, norm="inf", spec=spec)
    assert torch.all(ri.upper <= gi.upper)
