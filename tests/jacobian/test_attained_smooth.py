"""Attained lower bounds with the smoothed gradient-norm ascent (ReLU / LeakyReLU networks):
every value is the real gradient norm at its witness, the witness lies in the set, the value
never exceeds the exact local constant (pattern enumeration) and never falls below the
unsmoothed candidates' value."""

from __future__ import annotations

import math

import pytest
import torch

from lipbound.bounds.domains import make_domain
from lipbound.jacobian.attained import attained_lower, row_gradients
from tests.oracles import enumerate_local_lipschitz, random_sequential


@pytest.mark.parametrize("seed,slope,clip", [(0, 0.0, False), (1, 0.1, True), (2, 0.0, True),
                                             (3, 0.1, False)])
def test_smoothed_ascent_values_are_real_gradient_norms_below_the_exact_constant(seed, slope,
                                                                                   clip):
    net = random_sequential([3, 12, 10, 2], seed, slope).double().eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, generator=g, dtype=torch.float64)
    eps = 0.4
    rng = (0.0, 1.0) if clip else None
    domain = make_domain(x, eps, math.inf, rng)
    C = torch.eye(2, dtype=torch.float64)
    base, _ = attained_lower(net, C, domain, 1.0, 64, seed=seed)
    low, wit = attained_lower(net, C, domain, 1.0, 64, seed=seed, smooth_steps=30)
    assert bool((low >= base).all())
    assert bool(domain.contains(wit.unsqueeze(1), 1e-12).all())
    G = row_gradients(net, wit, C)  # [S, S, *in]: row s's gradient at witness s
    real = torch.stack([G[s, s].abs().sum() for s in range(2)])
    assert torch.allclose(low, real, rtol=1e-12, atol=1e-12)
    for s in range(2):
        exact = enumerate_local_lipschitz(net, x[0], eps, p=math.inf, c=C[s],
                                          data_range=rng).value
        assert float(low[s]) <= exact * (1 + 1e-9) + 1e-12
