"""LP points that aim at a function of the output (``sign_lp(aim=...)``, ``Anytime.lp_aim``).

On a domain whose every neuron has a fixed sign, the LP is the network itself on that
activation region, so the point it returns for ``aim = (G, g)`` must attain the minimum of
max_i (G_i f(x) + g_i) over the region: no sampled point of the region does better, and
without the aim (a mere feasible point) the same value is not reached.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lipbound.api import _setup
from lipbound.bab.anytime import Anytime
from lipbound.bab.lp import sign_lp
from lipbound.bab.outputs import OutputSearch
from tests.oracles import random_sequential


def _region_samples(seed: int):
    """(net, search, samples [N, 3] of the ball grouped by full sign pattern: {pattern: idx})."""
    net = random_sequential([3, 10, 10, 4], seed, 0.0).double().eval()
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(1, 3, generator=gen, dtype=torch.float64)
    traced, _, C, dom = _setup(net, x0, 0.5, math.inf, None, None, torch.float64)
    srch = OutputSearch(net, traced.graph, C, dom)
    pts = x0 + 0.5 * (2 * torch.rand(40000, 3, generator=gen, dtype=torch.float64) - 1)
    with torch.no_grad():
        z1 = net[0](pts)
        z2 = net[2](net[1](z1))
    pattern = torch.sign(torch.cat([z1, z2], 1)).int()
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(pattern.tolist()):
        groups.setdefault(tuple(p), []).append(i)
    return net, srch, pts, groups


def _objective(net, G: np.ndarray, g: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        y = net(x)
    return (y @ torch.as_tensor(G).T + torch.as_tensor(g)).amax(1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rows", [1, 2])
def test_aimed_lp_point_attains_the_minimum_over_a_fixed_region(seed, rows):
    net, srch, pts, groups = _region_samples(seed)
    _, los, ups, _ = srch.bound([torch.zeros(1, 10), torch.zeros(1, 10)])
    bounds = [(lo[0].numpy(), up[0].numpy()) for lo, up in zip(los, ups)]
    rng = np.random.default_rng(seed)
    G, g = rng.standard_normal((rows, 4)), rng.standard_normal(rows)
    big = sorted(groups.items(), key=lambda kv: -len(kv[1]))[:6]  # well-sampled regions
    beaten = 0
    for pattern, idx in big:
        s = np.array(pattern, dtype=float)
        signs = [s[:10], s[10:]]
        ans = sign_lp(srch.layers, srch.blo, srch.bhi, bounds, signs, 5.0, aim=(G, g))
        assert ans.status == "feasible"
        x = torch.as_tensor(ans.x)[None]
        at_lp = float(_objective(net, G, g, x)[0])
        sampled = float(_objective(net, G, g, pts[idx]).min())
        assert at_lp <= sampled + 1e-7 * (1 + abs(sampled))
        plain = sign_lp(srch.layers, srch.blo, srch.bhi, bounds, signs, 5.0)
        beaten += at_lp < float(_objective(net, G, g, torch.as_tensor(plain.x)[None])[0]) - 1e-9
    assert beaten > 0  # the aim changes the point: a mere feasible point is not the minimum


def test_lp_aim_picks_the_open_goal_farthest_from_holding():
    # rows 0-1 form goal 0, rows 2-3 goal 1; a goal holds on a domain when one row is below
    run = Anytime(10.0, 1e-4, 1e-7, 100, stop_below=torch.zeros(4, dtype=torch.float64),
                  groups=torch.tensor([0, 0, 1, 1]), goals_only=True)
    L = torch.full((4,), -1.0, dtype=torch.float64)
    rows, offsets = run.lp_aim(torch.tensor([0.5, 0.2, 0.9, 0.7], dtype=torch.float64), L)
    assert rows.tolist() == [2, 3] and offsets.tolist() == [0.0, 0.0]
    rows, _ = run.lp_aim(torch.tensor([0.5, 0.2, -0.1, 0.7], dtype=torch.float64), L)
    assert rows.tolist() == [0, 1]  # goal 1 holds (row 2 below its threshold)
    assert run.lp_aim(torch.tensor([-0.5, 0.2, -0.1, 0.7], dtype=torch.float64), L) is None
    free = Anytime(10.0, 1e-4, 1e-7, 100)
    rows, offsets = free.lp_aim(torch.tensor([1.0, 3.0], dtype=torch.float64),
                                torch.tensor([0.9, 1.0], dtype=torch.float64))
    assert rows.tolist() == [1] and offsets.tolist() == [0.0]  # the widest gap: raise row 1
