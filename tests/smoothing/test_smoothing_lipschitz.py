"""The Lipschitz-enhanced radius, simplex-map constants and the naive pair constants (lipbound's
naive bound of the logit differences)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, special
from torch import nn

from lipbound.errors import UnsupportedModelError
from lipbound.smoothing.lipschitz_constants import naive_pair_lipschitz
from lipbound.smoothing.lipschitz_radius import (
    gradient_bound,
    lipschitz_radius,
    psi,
    ramp_mean,
    smoothed_ramp,
)
from lipbound.smoothing.simplex import apply_map, lipschitz_factor, sparsemax

SIGMAS = (0.25, 1.0)


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("lip", [0.2, 1.0, 4.0, 30.0])
def test_radius_equals_integral_of_inverse_gradient_bound(sigma, lip):
    """R = int_{1/2}^{p} dq / G_L(q) by quadrature agrees with the closed form, from below."""
    for p in (0.51, 0.7, 0.9, 0.99):
        if p >= float(smoothed_ramp(-50 * sigma, lip, sigma)):
            continue
        ref, err = integrate.quad(
            lambda q: 1.0 / float(gradient_bound(q, lip, sigma)), 0.5, p, epsabs=1e-11, limit=200
        )
        r = lipschitz_radius(p, lip, sigma)
        assert r <= ref + 1e-9
        assert r == pytest.approx(ref, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("lip", [0.3, 2.0, 10.0])
def test_ramp_closed_form(sigma, lip):
    """On the 1-D ramp clip(L x + 1/2, 0, 1) the certified radius from the exact H(x) is |x|."""
    for x in (0.001, 0.05, 0.3, 1.0, 2.0):
        h = float(smoothed_ramp(x, lip, sigma))
        if h >= 1 - 1e-12:
            continue
        r = lipschitz_radius(h, lip, sigma)
        assert r <= x
        assert r == pytest.approx(x, rel=1e-8, abs=1e-10)
        # Cohen's radius of the same value is never larger
        assert sigma * special.ndtri(h) <= r + 1e-12


def test_tends_to_cohen_and_bracket():
    sigma = 0.5
    for p in (0.5, 0.6, 0.9, 0.999):
        cohen = sigma * special.ndtri(p)
        prev = np.inf
        for lip in (0.5, 2.0, 10.0, 1e2, 1e4, 1e7, np.inf):
            r = float(psi(p, lip, sigma))
            assert r >= cohen - 1e-11  # never below Cohen for p >= 1/2 (up to the shave)
            assert r <= prev + 1e-12  # decreasing in L
            if np.isfinite(lip):
                assert r <= cohen + 1 / (2 * lip) + 1e-12
            prev = r
        assert float(psi(p, 1e9, sigma)) == pytest.approx(cohen, abs=1e-8)
        assert float(psi(p, np.inf, sigma)) == pytest.approx(cohen, rel=1e-11)


def test_lower_upper_and_antisymmetry():
    sigma, lip = 1.0, 1.5
    p = np.array([0.05, 0.3, 0.5, 0.7, 0.95])
    lo = psi(p, lip, sigma, lower=True)
    hi = psi(p, lip, sigma, lower=False)
    assert np.all(lo <= hi) and np.all(hi - lo < 1e-8)
    assert np.allclose(lo, -psi(1 - p, lip, sigma, lower=False), atol=1e-8)
    assert psi(0.0, lip, sigma)[()] == -np.inf and psi(1.0, lip, sigma)[()] == np.inf


def _smooth_1d(h_vals, grid, sigma, x):
    """H(x) and H'(x) of a function tabulated on a fine grid (trapezoid rule)."""
    dens = np.exp(-0.5 * ((grid - x) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    hval = np.trapezoid(h_vals * dens, grid)
    deriv = np.trapezoid(h_vals * dens * (grid - x) / sigma**2, grid)
    return hval, deriv


def test_gradient_bound_holds_for_random_lipschitz_functions():
    """|H'(x)| <= G_L(H(x)) for random piecewise-linear L-Lipschitz [0, 1] functions; the
    ramp attains it."""
    rng = np.random.default_rng(1)
    sigma, lip = 0.5, 2.0
    grid = np.linspace(-8, 8, 32001)
    for _ in range(30):
        knots = np.sort(rng.uniform(-4, 4, size=12))
        slopes = rng.uniform(-lip, lip, size=13)
        h = np.empty_like(grid)
        val = rng.uniform(0, 1)
        # integrate slopes, clip to [0, 1] (clipping keeps the Lipschitz constant)
        seg = np.searchsorted(knots, grid)
        h = np.clip(val + np.cumsum(slopes[seg]) * (grid[1] - grid[0]), 0, 1)
        for x in (-1.0, 0.0, 0.7):
            hv, dv = _smooth_1d(h, grid, sigma, x)
            if 1e-6 < hv < 1 - 1e-6:
                assert abs(dv) <= float(gradient_bound(hv, lip, sigma)) * (1 + 1e-6) + 1e-8
    ramp = np.clip(lip * grid + 0.5, 0, 1)
    for x in (-0.4, 0.1, 0.6):
        hv, dv = _smooth_1d(ramp, grid, sigma, x)
        assert dv == pytest.approx(float(gradient_bound(hv, lip, sigma)), rel=1e-5)
        assert hv == pytest.approx(float(smoothed_ramp(x, lip, sigma)), abs=1e-6)


def test_ramp_mean_error_bound_is_honest():
    import mpmath

    mpmath.mp.dps = 40
    for c, w in [(-3.0, 0.01), (0.2, 1.0), (2.5, 7.0), (-0.1, 1e-3)]:
        val, err = ramp_mean(np.array(c), np.array(w))
        f = lambda v: 1 - mpmath.ncdf(v)  # noqa: E731
        cm, wm = mpmath.mpf(c), mpmath.mpf(w)  # exact end points of the window
        ref = mpmath.quad(f, [cm - wm / 2, cm + wm / 2]) / wm
        assert abs(float(val) - float(ref)) <= float(err)


def _grad_norms(fn, x):
    x = x.clone().requires_grad_(True)
    out = fn(x)
    norms = []
    for c in range(out.shape[1]):
        (g,) = torch.autograd.grad(out[:, c].sum(), x, retain_graph=True)
        norms.append(g.flatten(1).norm(dim=1))
    return torch.stack(norms, dim=1)


def _mlp(seed, d=6, k=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 12), nn.ReLU(), nn.Linear(12, 9), nn.ReLU(),
                         nn.Linear(9, k)).double().eval()


@pytest.mark.parametrize("map_name", ["softmax", "sparsemax"])
@pytest.mark.parametrize("t", [0.3, 1.0, 5.0])
def test_simplex_factor_bounds_soft_output_gradients(map_name, t):
    for seed in range(3):
        net = _mlp(seed)
        pairs = naive_pair_lipschitz(net, torch.zeros(6, dtype=torch.float64))
        bound = lipschitz_factor(map_name, t, 4) * pairs.max(axis=1)
        x = torch.randn(400, 6, dtype=torch.float64) * 3
        g = _grad_norms(lambda z, net=net: apply_map(map_name, net(z), t), x)
        assert torch.all(g <= torch.as_tensor(bound) * (1 + 1e-9))


def test_softmax_jacobian_spectral_norm_at_most_half():
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(2000):
        z = rng.normal(size=rng.integers(2, 8)) * rng.uniform(0, 4)
        p = np.exp(z - z.max())
        p /= p.sum()
        jac = np.diag(p) - np.outer(p, p)
        worst = max(worst, np.linalg.norm(jac, 2))
        # per coordinate: ||p_c (e_c - p)|| <= sqrt(2)/4
        assert np.max(np.linalg.norm(jac, axis=1)) <= np.sqrt(2) / 4 + 1e-12
    assert worst <= 0.5 + 1e-12
    p = np.array([0.5, 0.5])
    assert np.linalg.norm(np.diag(p) - np.outer(p, p), 2) == pytest.approx(0.5)


def test_sparsemax_is_projection_onto_simplex():
    z = torch.tensor([[0.1, 2.0, 1.5, -1.0], [0.0, 0.0, 0.0, 0.0], [5.0, -5.0, 0.0, 0.0]])
    p = sparsemax(z)
    assert torch.allclose(p.sum(1), torch.ones(3))
    assert torch.all(p >= 0)
    assert torch.allclose(p[1], torch.full((4,), 0.25))
    assert torch.allclose(p[0], torch.tensor([0.0, 0.75, 0.25, 0.0]))


def _spectral_product(net) -> float:
    """The product of the spectral norms of the Linear layers (the whole map's l2 constant)."""
    return float(np.prod([np.linalg.norm(m.weight.detach().double().numpy(), 2)
                          for m in net if isinstance(m, nn.Linear)]))


def _check_pairs_bound_gradients(net, pairs, x):
    k = pairs.shape[0]
    for c in range(k):
        for j in range(k):
            if c != j:
                def diff(z, c=c, j=j, net=net):
                    out = net(z)
                    return (out[:, c] - out[:, j])[:, None]

                g = _grad_norms(diff, x)
                assert torch.all(g <= pairs[c, j])


def test_naive_pair_constants_bound_gradients_of_any_model_and_reject_unsupported_ones():
    """lipbound's naive bound (the engine's, on the traced model) of every logit difference:
    at most sqrt(2) times the product of spectral norms, above every sampled gradient norm, for
    MLPs and for the models the old Sequential-only product rejected (convolutions, a bare
    Linear, Tanh); models lipbound cannot trace raise UnsupportedModelError naming the layer."""
    for seed in range(3):
        net = _mlp(seed)
        pairs = naive_pair_lipschitz(net, torch.zeros(6, dtype=torch.float64))
        assert _spectral_product(net) * np.sqrt(2) >= pairs.max() * (1 - 1e-9)
        x = torch.randn(300, 6, dtype=torch.float64) * 3
        _check_pairs_bound_gradients(net, pairs, x)
    torch.manual_seed(0)
    others = [
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2)).double().eval(),
         (1, 3, 3)),
        (nn.Linear(3, 2).double().eval(), (3,)),
        (nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)).double().eval(), (3,)),
    ]
    for net, shape in others:
        pairs = naive_pair_lipschitz(net, torch.zeros(shape, dtype=torch.float64))
        _check_pairs_bound_gradients(net, pairs, torch.randn(300, *shape, dtype=torch.float64))
    with pytest.raises(UnsupportedModelError, match="LayerNorm"):
        naive_pair_lipschitz(nn.Sequential(nn.LayerNorm(3), nn.Linear(3, 2)).eval(),
                             torch.zeros(3))
    with pytest.raises(UnsupportedModelError, match="Softmax"):
        naive_pair_lipschitz(nn.Sequential(nn.Linear(3, 2), nn.Softmax(dim=1)).eval(),
                             torch.zeros(3))


def test_lipsdp_pair_constants_bound_gradients_and_beat_naive():
    """lipschitz_constant='lipsdp': sqrt(2) L_f from lipbound's certified LipSDP, min'ed with the
    naive pair constants; sampled gradient norms of every logit difference stay below it."""
    from lipbound.smoothing.lipschitz_constants import lipsdp_pair_lipschitz

    net = _mlp(0)
    pairs = lipsdp_pair_lipschitz(net, torch.zeros(6, dtype=torch.float64))
    naive = naive_pair_lipschitz(net, torch.zeros(6, dtype=torch.float64))
    assert np.all(pairs <= naive) and pairs.max() < naive.max()
    x = torch.randn(300, 6, dtype=torch.float64) * 3
    for c in range(4):
        for j in range(4):
            if c != j:
                def diff(z, c=c, j=j):
                    out = net(z)
                    return (out[:, c] - out[:, j])[:, None]

                assert torch.all(_grad_norms(diff, x) <= pairs[c, j])
