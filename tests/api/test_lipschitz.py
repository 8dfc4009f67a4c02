"""Local Lipschitz bounds: exact values on tiny nets, sampled soundness, orderings, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lipbound
from lipbound.bounds.domains import make_domain, vector_norm
from lipbound.errors import InputError, ShapeError, SpecError, UnknownMethodError
from tests.models import mlp, small_cnn
from tests.oracles import enumerate_local_lipschitz

METHODS = ["naive", "ibp", "crown", "alpha-crown"]


def _sampled_grad_norms(model, x1, eps, norm, C, data_range=None, n=1500, seed=0):
    """Max over sampled points of ||grad C_s . f||_q, per row (a lower bound of the truth)."""
    dom = make_domain(x1.double(), eps, norm, data_range)
    pts = dom.sample(n, torch.Generator().manual_seed(seed))[:, 0].requires_grad_(True)
    m = model.double()
    y = m(pts) @ C.double().t()
    q = {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}[dom.p]
    out = []
    for s in range(C.shape[0]):
        g = torch.autograd.grad(y[:, s].sum(), pts, retain_graph=True)[0]
        out.append(vector_norm(g.flatten(1), q).max())
    model.float()
    return torch.stack(out)


@pytest.mark.parametrize("slope", [0.0, 0.3])
@pytest.mark.parametrize("norm", [math.inf, 1])
@pytest.mark.parametrize("seed", range(3))
def test_bounds_bracket_the_exact_constant(slope, norm, seed):
    act = nn.ReLU() if slope == 0 else nn.LeakyReLU(slope)
    model = mlp((3, 6, 5, 2), act, seed=seed)
    x = torch.rand(3, generator=torch.Generator().manual_seed(seed))
    eps = 0.6
    unstable = 0
    for row in range(2):
        c = torch.zeros(2)
        c[row] = 1.0
        ex = enumerate_local_lipschitz(model, x, eps, norm, c)
        exact, unstable = ex.value, unstable + ex.n_unstable
        for method in METHODS:
            r = lipbound.local_lipschitz(model, x, eps, norm=norm, spec=c.unsqueeze(0),
                                         method=method, n_samples=128)
            assert float(r.upper[0]) >= exact * (1 - 1e-9), (method, exact, r.upper)
            assert float(r.lower[0]) <= exact * (1 + 1e-9) + 1e-12
            assert r.witness is not None and make_domain(x.double().unsqueeze(0), eps,
                                                         norm).contains(r.witness[:1]).all()
    assert unstable > 0  # the case exercises unstable neurons


def test_exact_value_is_reached_when_no_neuron_is_unstable():
    model = mlp((3, 5, 2), nn.ReLU(), seed=7)
    x = torch.rand(3)
    r = lipbound.local_lipschitz(model, x, 1e-6, method="crown")
    assert torch.allclose(r.upper, r.lower, rtol=1e-6)


SLOW = pytest.mark.slow
SMOOTH_CASES = [(nn.Tanh(), math.inf), (nn.Sigmoid(), 2), (nn.GELU(), 1), (nn.SiLU(), math.inf),
                pytest.param(nn.Softplus(), 2, marks=SLOW), pytest.param(nn.ELU(), 1, marks=SLOW),
                pytest.param(nn.Tanh(), 1, marks=SLOW), pytest.param(nn.Sigmoid(), 1, marks=SLOW),
                pytest.param(nn.GELU(), 2, marks=SLOW), pytest.param(nn.SiLU(), 2, marks=SLOW)]


@pytest.mark.parametrize(("act", "norm"), SMOOTH_CASES)
def test_smooth_mlps_upper_bounds_dominate_sampled_gradients(act, norm):
    model = mlp((4, 8, 8, 3), act, seed=1)
    x = torch.rand(4, generator=torch.Generator().manual_seed(2))
    C = torch.eye(3)
    sampled = _sampled_grad_norms(model, x.unsqueeze(0), 0.4, norm, C)
    for method in METHODS:
        r = lipbound.local_lipschitz(model, x, 0.4, norm=norm, method=method, iterations=10,
                                     n_samples=64)
        assert (r.upper >= sampled * (1 - 1e-9)).all(), (method, r.upper, sampled)
        assert (r.lower <= r.upper).all()


@pytest.mark.parametrize(("act", "norm"), [
    (F.relu, math.inf), (torch.tanh, 2),
    pytest.param(torch.sigmoid, math.inf, marks=SLOW), pytest.param(F.gelu, 2, marks=SLOW),
    pytest.param(F.relu, 2, marks=SLOW), pytest.param(torch.tanh, math.inf, marks=SLOW)])
def test_cnn_with_residual_pooling_and_padding(act, norm):
    model = small_cnn(act, seed=4)
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    sampled = _sampled_grad_norms(model, x, 0.05, norm, torch.eye(4), n=600)
    for method in ["ibp", "crown"]:
        r = lipbound.local_lipschitz(model, x, 0.05, norm=norm, method=method, n_samples=64)
        assert (r.upper >= sampled * (1 - 1e-9)).all(), (method, r.upper, sampled)


def test_jacobian_bounds_contain_sampled_jacobians():
    model = small_cnn(F.relu, seed=5)
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(6))
    lo, hi = lipbound.jacobian_bounds(model, x, 0.05, method="crown")
    assert lo.shape == (4, 1, 4, 4) and hi.shape == (4, 1, 4, 4)
    dom = make_domain(x.double(), 0.05, math.inf)
    pts = dom.sample(300, torch.Generator().manual_seed(0))[:, 0].requires_grad_(True)
    y = model.double()(pts)
    for s in range(4):
        g = torch.autograd.grad(y[:, s].sum(), pts, retain_graph=True)[0]
        assert (g >= lo[s] - 1e-9).all() and (g <= hi[s] + 1e-9).all()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("norm", [math.inf, 1])
def test_method_ordering(seed, norm):
    model = mlp((5, 12, 12, 3), nn.ReLU(), seed=seed)
    x = torch.rand(5, generator=torch.Generator().manual_seed(seed))
    ups = {m: lipbound.local_lipschitz(model, x, 0.1, norm=norm, method=m, n_samples=16).upper
           for m in METHODS}
    tol = 1e-9
    assert (ups["naive"] >= ups["ibp"] - tol).all()
    assert (ups["ibp"] >= ups["crown"] - tol).all()
    assert (ups["crown"] >= ups["alpha-crown"] - tol).all()


@pytest.mark.parametrize("norm", [math.inf, 2, pytest.param(1, marks=SLOW)])
def test_eps_zero_returns_the_autograd_gradient_norm(norm):
    model = small_cnn(torch.tanh, seed=2)
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(9))
    q = {math.inf: 1.0, 2: 2.0, 1: math.inf}[norm]
    xr = x.double().requires_grad_(True)
    y = model.double()(xr)[0]
    grads = torch.stack([torch.autograd.grad(y[s], xr, retain_graph=True)[0].flatten()
                         for s in range(4)])
    model.float()
    expected = vector_norm(grads, q)
    for method in ["ibp", "crown"]:
        r = lipbound.local_lipschitz(model, x, 0.0, norm=norm, method=method, n_samples=4)
        assert torch.allclose(r.upper, expected, rtol=1e-7, atol=1e-9)
        assert torch.allclose(r.lower, expected, rtol=1e-7, atol=1e-9)


def test_result_record():
    r = lipbound.local_lipschitz(mlp(), torch.rand(4), 0.1, n_samples=8)
    d = r.to_dict()
    assert d["value"] == r.value == float(r.upper.max())
    assert d["method"] == "crown" and d["status"] == "certified" and len(d["upper"]) == 3
    assert r.gap >= 1.0


def test_bad_input():
    model = mlp()
    x = torch.rand(4)
    with pytest.raises(UnknownMethodError):
        lipbound.local_lipschitz(model, x, 0.1, method="lipsdp-typo")
    with pytest.raises(lipbound.UnsupportedNormError):
        lipbound.local_lipschitz(model, x, 0.1, norm=0.5)
    with pytest.raises(SpecError):
        lipbound.local_lipschitz(model, x, 0.1, spec=torch.ones(1, 4))
    with pytest.raises(InputError):
        lipbound.local_lipschitz(model, x, -1.0)
    with pytest.raises(InputError):
        lipbound.local_lipschitz(model, x, 0.1, timeout=0)
    with pytest.raises(ShapeError):  # output is not [B, K]
        lipbound.local_lipschitz(nn.Sequential(nn.Linear(4, 3), nn.Flatten(0)).eval(), x, 0.1)
    with pytest.raises(ShapeError):
        lipbound.local_lipschitz(model, torch.rand(7), 0.1)


def test_affine_model_has_its_exact_constant():
    """A model without nonlinearities: the gradient is constant (a fixed node of the graph)."""
    model = nn.Sequential(nn.Linear(2, 2)).eval()
    r = lipbound.local_lipschitz(model, torch.rand(2), 0.1, n_samples=4)
    expected = model[0].weight.detach().double().abs().sum(1)
    assert torch.allclose(r.upper, expected, rtol=1e-8) and torch.allclose(r.lower, expected)
