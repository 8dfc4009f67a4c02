"""Split constraints inside the bound (beta-CROWN multipliers) and the sign-domain LP.

Soundness: under random sign splits, every sampled input that satisfies the splits has its
pre-activations inside the re-tightened bounds and its gradient norm below the domain's bound.
Tightness: on a hand-made case the multipliers move a bound that clamping alone cannot.
The LP agrees with sampling on feasibility and its margin points lie strictly inside.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lipbound.api import _setup
from lipbound.bab.lp import sign_lp
from lipbound.bab.relu_split import LipschitzSearch
from lipbound.bounds.domains import LpBall
from lipbound.graph.trace import trace
from lipbound.propagate.ibp import evaluate_fixed, ibp_pass
from lipbound.propagate.intermediate import crown_intermediate
from lipbound.propagate.state import BoundState
from tests.oracles import random_sequential


def _net(seed: int, slope: float = 0.0):
    return random_sequential([3, 10, 10, 2], seed, slope).double().eval()


def _preacts(net, x):
    """Pre-activations of the two hidden layers at x [N, 3]."""
    z1 = net[0](x)
    return z1, net[2](net[1](z1))


def _sampled(seed: int, slope: float, eps: float):
    """(net, search, 20000 points of the ball, their pre-activations per layer, generator)."""
    net = _net(seed, slope)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(1, 3, generator=gen, dtype=torch.float64)
    traced, _, C, dom = _setup(net, x0, eps, math.inf, None, None, torch.float64)
    graph = traced.graph
    srch = LipschitzSearch(net, graph, C, dom, 1.0)
    pts = x0 + eps * (2 * torch.rand(20000, 3, generator=gen, dtype=torch.float64) - 1)
    with torch.no_grad():
        z1s, z2s = _preacts(net, pts)
    return net, srch, pts, z1s, z2s, gen


def _random_splits(z1s, z2s, gen):
    """Signs on random unstable neurons, taken from one sampled point (so they are feasible)."""
    pick = int(torch.randint(len(z1s), (1,), generator=gen))
    signs = []
    for z in (z1s, z2s):
        unstable = (z.min(0).values < 0) & (z.max(0).values > 0)
        chosen = unstable & (torch.rand(z.shape[1], generator=gen, dtype=z.dtype) < 0.5)
        signs.append(torch.where(chosen, torch.sign(z[pick]), torch.zeros_like(z[pick])))
    return signs


@pytest.mark.parametrize("seed,slope", [(0, 0.0), (1, 0.0), (2, 0.1), (3, 0.0)])
def test_domain_bounds_contain_every_sample_satisfying_the_splits(seed, slope):
    net, srch, pts, z1s, z2s, gen = _sampled(seed, slope, 0.6)
    for _ in range(6):
        s1, s2 = _random_splits(z1s, z2s, gen)
        ub, los, ups, _ = srch.bound([s1[None], s2[None]])
        inside = ((s1 * z1s >= 0).all(1) & (s2 * z2s >= 0).all(1))
        assert inside.any()
        for z, lo, up in ((z1s, los[0], ups[0]), (z2s, los[1], ups[1])):
            zi = z[inside]
            assert (zi >= lo - 1e-9).all() and (zi <= up + 1e-9).all()
        norms = srch.attain(pts[inside][:2000])  # [N, S]: gradient norms at the inputs
        assert (norms <= ub + 1e-9).all()


def test_split_multipliers_tighten_a_sibling_bound():
    """z = (x1 + x2, x1 + x2 - 0.5) on [-1, 1]^2: under x1 + x2 >= 0 the second neuron is at
    least -0.5, which the box alone (lower -2.5) cannot see; beta-CROWN recovers it."""
    lin = torch.nn.Linear(2, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
        lin.bias.copy_(torch.tensor([0.0, -0.5]))
    net = torch.nn.Sequential(lin, torch.nn.ReLU(), torch.nn.Linear(2, 1).double()).eval()
    x0 = torch.zeros(1, 2, dtype=torch.float64)
    graph = trace(net, x0)
    z = [n.name for n in graph.nodes if n.op == "relu"][0]
    z = graph[z].inputs[0]
    dom = LpBall(x0, torch.tensor([1.0], dtype=torch.float64), math.inf)

    def lower(iterations):
        split = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
        st = BoundState(graph, dom, evaluate_fixed(graph), splits={z: split})
        ibp_pass(st)
        crown_intermediate(st, iterations=iterations)
        return float(st.bounds[z].lower[0, 1])

    assert lower(0) == pytest.approx(-2.5)
    tight = lower(60)
    assert -2.0 < tight <= -0.5 + 1e-9  # sound, and most of the way from -2.5 to -0.5


def test_sign_lp_matches_sampling_and_margin_points_are_strictly_inside():
    net, srch, pts, z1s, z2s, gen = _sampled(4, 0.0, 0.5)
    _, los, ups, _ = srch.bound([torch.zeros(1, 10), torch.zeros(1, 10)])
    bounds = [(lo[0].numpy(), up[0].numpy()) for lo, up in zip(los, ups)]
    seen = {tuple(torch.sign(torch.cat([a, b])).int().tolist()) for a, b in zip(z1s, z2s)}
    layers = srch.layers
    checked = 0
    for pattern in list(seen)[:40]:  # sampled patterns are feasible
        s = np.array(pattern, dtype=float)
        ans = sign_lp(layers, srch.blo, srch.bhi, bounds, [s[:10], s[10:]], 5.0, margin=True)
        assert ans.status == "feasible"
        if ans.margin > 1e-7:
            x = torch.as_tensor(ans.x)[None]
            with torch.no_grad():
                z1, z2 = _preacts(net, x)
            assert (torch.sign(torch.cat([z1, z2], 1))[0].numpy() == s).all()
            checked += 1
    assert checked > 0
    # a pattern with every unstable neuron flipped against its sampled range is infeasible
    always_pos = (z1s > 0).all(0)
    if always_pos.any():
        s1 = np.zeros(10)
        s1[int(always_pos.nonzero()[0])] = -1.0  # z <= 0 where no sample is
        lo1, up1 = bounds[0]
        if lo1[int(always_pos.nonzero()[0])] > 0:  # stable by bounds: the clamp refutes it
            ans = sign_lp(layers, srch.blo, srch.bhi, bounds, [s1, np.zeros(10)], 5.0)
            assert ans.status == "infeasible"
