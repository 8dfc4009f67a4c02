"""exact_local_lipschitz: bad input raises lipbound's typed errors with useful messages, a
time-out returns a sound bracket, and the CROWN big-M bounds are sound and tighter."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lipbound.errors import (
    InputError,
    ProblemTooLargeError,
    UnsupportedModelError,
    UnsupportedNormError,
)
from lipbound.exact.api import _row_bounds, exact_local_lipschitz
from lipbound.exact.domain import make_ball
from lipbound.exact.from_graph import mlp_from_graph
from lipbound.inputs import get_graph
from tests.oracles import random_mlp, random_sequential, sample_ball

NET = random_sequential([3, 4, 1], 0)
X0 = torch.zeros(3)


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan")])
def test_timeout_must_be_positive(timeout):
    with pytest.raises(InputError, match="timeout"):
        exact_local_lipschitz(NET, X0, 0.1, timeout=timeout)


def test_tanh_is_named_with_the_methods_that_support_it():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).eval()
    with pytest.raises(UnsupportedModelError, match=r"tanh.*'crown'") as err:
        exact_local_lipschitz(net, X0, 0.1)
    assert "ReLU and LeakyReLU" in str(err.value)


def test_conv_is_not_a_chain():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 1)).eval()
    with pytest.raises(UnsupportedModelError, match="conv"):
        exact_local_lipschitz(net, torch.zeros(1, 4, 4), 0.1)


def test_l2_is_refused_with_alternatives():
    with pytest.raises(UnsupportedNormError, match=r"l_inf and l_1.*(bab|LipSDP)"):
        exact_local_lipschitz(NET, X0, 0.1, norm=2)


def test_too_many_binaries_message():
    net = random_sequential([10, 64, 64, 1], 0)
    with pytest.raises(ProblemTooLargeError) as err:
        exact_local_lipschitz(net, torch.zeros(10), 0.5, max_binaries=20)
    msg = str(err.value)
    assert "max_binaries=20" in msg and "binaries" in msg and "larger max_binaries=" in msg
    estimate = int(msg.split("up to ")[1].split()[0])
    assert estimate > 20


def test_bad_options():
    with pytest.raises(InputError, match="big_m"):
        exact_local_lipschitz(NET, X0, 0.1, big_m="ibp-ish")
    with pytest.raises(InputError, match="max_binaries"):
        exact_local_lipschitz(NET, X0, 0.1, max_binaries=-1)
    with pytest.raises(InputError, match="eps"):
        exact_local_lipschitz(NET, X0, -0.1)


def test_timeout_returns_sound_bracket():
    net = random_sequential([10, 32, 32, 1], 1)
    x0 = torch.from_numpy(np.random.default_rng(5).standard_normal(10))
    r = exact_local_lipschitz(net, x0, 0.5, timeout=0.3)
    assert r.status == "timeout"
    assert 0 < float(r.lower[0]) < float(r.upper[0]) < math.inf
    # the bracket contains every sampled gradient norm's maximum and the witness attains lower
    ball = make_ball(random_mlp([10, 32, 32, 1], 1), x0, 0.5, math.inf)
    pts = torch.from_numpy(sample_ball(ball, 2000, seed=0)).float().requires_grad_(True)
    (g,) = torch.autograd.grad(net(pts).sum(), pts)
    assert float(g.abs().sum(1).max()) <= float(r.upper[0])
    assert ball.contains(r.witness[0].numpy())
    assert r.to_dict()["status"] == "timeout"


@pytest.mark.parametrize("p", [math.inf, 1.0])
def test_crown_bounds_sound_and_tighter(p):
    """The CROWN big-M bounds contain sampled forward and backward values (every pattern
    consistent with the sampled point) and lie inside the interval bounds."""
    sizes, seed, eps = [4, 8, 8, 2], 2, 0.6
    net = random_sequential(sizes, seed, 0.1, weight_std=1.0)
    x0 = torch.from_numpy(0.3 * np.random.default_rng(seed).standard_normal(4)).reshape(1, 4)
    graph = get_graph(net, x0, torch.float64, x0.device)
    gm = mlp_from_graph(graph)
    from lipbound.bounds.domains import make_domain

    C = torch.eye(2, dtype=torch.float64)
    dom = make_domain(x0, eps, p)
    crown = _row_bounds(gm, graph, C, dom, x0, eps, p, None, "crown")
    ibp = _row_bounds(gm, graph, C, dom, x0, eps, p, None, "interval")
    mlp = gm.mlp
    pts = sample_ball(make_ball(mlp, x0, eps, p), 400, seed=1)
    for s in range(2):
        for (lc, uc), (li, ui) in zip(crown[s].preact + crown[s].backward,
                                      ibp[s].preact + ibp[s].backward):
            tol = 1e-9 * (1 + np.abs(li) + np.abs(ui))  # interval rounding pads differ
            assert np.all(lc >= li - tol) and np.all(uc <= ui + tol)
        assert crown[s].n_unstable() <= ibp[s].n_unstable()
        for x in pts:
            zs = mlp.preactivations(x)
            for (l, u), z in zip(crown[s].preact, zs):
                assert np.all(l <= z) and np.all(z <= u)
            # a random pattern consistent with x (random choice at z = 0 is irrelevant here)
            g = mlp.gradient_for_pattern(tuple(z > 0 for z in zs), C[s].numpy())
            lo, hi = crown[s].gradient
            assert np.all(lo <= g) and np.all(g <= hi)
    def width(bs):
        return sum(float(np.sum(u - l)) for b in bs for l, u in (*b.preact, *b.backward,
                                                                  b.gradient))

    assert width(crown) < width(ibp)  # strictly tighter somewhere
