"""Sign-splitting branch-and-bound on graphs that are not MLPs (convolutions, residual adds).

Soundness: under random sign splits of a small residual CNN, every sampled input that satisfies
the splits has its pre-activations inside the domain's forward bounds and its gradient norms
below the domain's bound, whether the domain recomputes the gradient-element bounds or reuses
the root's. The search as a whole never certifies below a gradient norm attained in the ball,
never ends above CROWN, and tightens CROWN; output bounds by ReLU splitting contain sampled
outputs and are tighter than CROWN's. The branching reach is exact on affine chains.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lipbound
import lipbound.bab.relu_split as relu_split
from lipbound.api import _setup
from lipbound.bab.relu_split import (
    LipschitzSearch,
    _graph_reach,
    _input_reach,
    mlp_layers,
)
from lipbound.graph.shapes import relu_inputs
from lipbound.jacobian.attained import row_gradients
from tests.oracles import random_sequential


class _ResCNN(torch.nn.Module):
    """conv -> relu -> (conv + skip) -> relu -> linear, on [1, 6, 6] inputs."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = torch.nn.Conv2d(1, 3, 3, padding=1)
        self.c2 = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.fc = torch.nn.Linear(3 * 6 * 6, 3)

    def preacts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z1 = self.c1(x)
        return z1, self.c2(torch.relu(z1)) + torch.relu(z1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.preacts(x)[1]).flatten(1))


def _setup_cnn(seed: int, eps: float):
    net = _ResCNN(seed).double().eval()
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(1, 1, 6, 6, generator=gen, dtype=torch.float64)
    traced, _, C, dom = _setup(net, x0, eps, math.inf, None, None, torch.float64)
    graph = traced.graph
    pts = x0 + eps * (2 * torch.rand(4000, 1, 6, 6, generator=gen, dtype=torch.float64) - 1)
    with torch.no_grad():
        zs = [z.flatten(1) for z in net.preacts(pts)]
    return net, graph, C, dom, pts, zs, gen


def test_relu_inputs_are_the_preactivations_in_topological_order():
    net, graph, *_ = _setup_cnn(0, 0.1)
    names = relu_inputs(graph)
    assert [graph[n].op for n in names][1] == "add"  # the residual sum feeds the second relu
    assert [graph[n].shape for n in names] == [(3, 6, 6), (3, 6, 6)]
    assert graph.position(names[0]) < graph.position(names[1])


def test_graph_reach_equals_the_weight_product_reach_on_an_mlp():
    net = random_sequential([4, 7, 5, 2], 3, 0.0).double().eval()
    traced, _, C, _ = _setup(net, torch.zeros(4), 0.1, math.inf, None, None, torch.float64)
    graph = traced.graph
    layers = mlp_layers(graph)
    got = _graph_reach(graph, [L.z for L in layers[:-1]], torch.float64, torch.device("cpu"))
    for a, b in zip(got, _input_reach(layers, C)):
        assert torch.allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("seed,reuse", [(0, False), (1, True), (2, False)])
def test_cnn_domain_bounds_contain_every_sample_satisfying_the_splits(seed, reuse,
                                                                      monkeypatch):
    if reuse:  # children reuse the root's gradient-element bounds instead of recomputing
        monkeypatch.setattr(relu_split, "ELEMENT_ROWS_MAX", 0)
    net, graph, C, dom, pts, zs, gen = _setup_cnn(seed, 0.15)
    srch = LipschitzSearch(net, graph, C, dom, 1.0)
    assert srch.layers is None and not srch.lp_enabled  # no LP off MLPs
    root, *_ = srch.bound([torch.zeros(1, z.shape[1], dtype=torch.float64) for z in zs])
    if reuse:
        assert not srch.element_rows
    for _ in range(5):
        pick = int(torch.randint(len(pts), (1,), generator=gen))
        signs = []
        for z in zs:
            unstable = (z.min(0).values < 0) & (z.max(0).values > 0)
            chosen = unstable & (torch.rand(z.shape[1], generator=gen, dtype=z.dtype) < 0.3)
            signs.append(torch.where(chosen, torch.sign(z[pick]), torch.zeros_like(z[pick])))
        ub, los, ups, scores = srch.bound([s[None] for s in signs])
        inside = torch.stack([(s * z >= 0).all(1) for s, z in zip(signs, zs)]).all(0)
        assert inside.any()
        for z, lo, up in zip(zs, los, ups):
            zi = z[inside]
            assert (zi >= lo - 1e-9).all() and (zi <= up + 1e-9).all()
        G = row_gradients(net, pts[inside][:500], C)  # [S, N, *in]
        norms = G.flatten(2).abs().sum(2).t()  # [N, S]: l1 norms (the l_inf ball's dual)
        assert (norms <= ub * (1 + 1e-9) + 1e-12).all()
        assert all(sc.shape == (1, z.shape[1]) and (sc >= 0).all() for sc, z in zip(scores, zs))


def test_cnn_lipschitz_bab_is_sound_and_tightens_crown():
    net, graph, C, dom, pts, zs, gen = _setup_cnn(0, 0.1)
    x0 = dom.center
    crown = lipbound.local_lipschitz(net, x0, 0.1, method="crown")
    bab = lipbound.local_lipschitz(net, x0, 0.1, method="bab", timeout=6, progress=False,
                                   objective="rows")
    assert bab.details["split"] == "relu"
    norms = row_gradients(net, pts, C).flatten(2).abs().sum(2).max(1).values  # [S]
    assert (bab.upper >= norms * (1 - 1e-9)).all()
    assert (bab.upper >= bab.lower).all()
    assert (bab.upper <= crown.upper * (1 + 1e-9)).all()
    assert float(bab.upper.max()) < 0.99 * float(crown.upper.max())


def test_cnn_output_bounds_by_relu_splits_contain_samples_and_beat_crown():
    net, graph, C, dom, pts, zs, gen = _setup_cnn(1, 0.1)
    x0 = dom.center
    lo_c, up_c = lipbound.output_bounds(net, x0, 0.1, method="crown")
    lo, up = lipbound.output_bounds(net, x0, 0.1, method="bab", split="relu", timeout=4,
                                    progress=False)
    with torch.no_grad():
        y = net(pts)
    assert (y >= lo - 1e-9).all() and (y <= up + 1e-9).all()
    assert (lo >= lo_c - 1e-9).all() and (up <= up_c + 1e-9).all()
    assert float((up - lo).sum()) < 0.98 * float((up_c - lo_c).sum())


@pytest.mark.parametrize("case", ["mlp relu", "mlp input", "mlp mixed", "cnn relu"])
def test_bab_is_never_looser_than_crown_even_when_stopped_at_once(case):
    """Method "bab" keeps the better of its search and method "crown" on every row, so a
    search stopped by its budget before its first step still returns crown's bound (on the
    residual CNN the relu search's own root bound is looser than crown's)."""
    kind, split = case.split()
    if kind == "cnn":
        net, _, _, dom, *_ = _setup_cnn(0, 0.1)
        x0, eps = dom.center, 0.1
    else:
        torch.manual_seed(3)
        net = nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(),
                            nn.Linear(24, 3)).double().eval()
        x0, eps = torch.rand(6, dtype=torch.float64), 0.3
    crown = lipbound.local_lipschitz(net, x0, eps, method="crown")
    bab = lipbound.local_lipschitz(net, x0, eps, method="bab", timeout=1e-3, split=split,
                                   progress=False, objective="rows")
    assert (bab.upper <= crown.upper * (1 + 1e-12)).all(), (bab.upper, crown.upper)


@pytest.mark.parametrize("eps, split", [(0.01, "relu"), (2.0, "mixed")])
def test_auto_split_on_few_inputs_follows_the_undecided_kinks(eps, split):
    """split="auto" for Lipschitz constants on <= 8 inputs: sign splits where crown leaves at
    most LIPSCHITZ_MIXED_MIN_UNSTABLE kink elements undecided, mixed where it leaves more."""
    from lipbound.api import LIPSCHITZ_MIXED_MIN_UNSTABLE, _setup
    from lipbound.bab.split_points import undecided_kinks
    from lipbound.jacobian.bound import jacobian_state

    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(4, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(),
                        nn.Linear(48, 2)).double().eval()
    x0 = torch.rand(4, dtype=torch.float64)
    traced, _, C, dom = _setup(net, x0, eps, math.inf, None, None, torch.float64)
    state, _ = jacobian_state(traced.graph, C, dom, "crown", 1.0, bound_gradient=False)
    u = undecided_kinks(traced.graph, state.bounds)
    brute = sum(int(((state.bounds[n].lower < 0) & (state.bounds[n].upper > 0)).sum())
                for n in relu_inputs(traced.graph))
    assert u == brute
    assert (u > LIPSCHITZ_MIXED_MIN_UNSTABLE) == (split == "mixed")
    res = lipbound.local_lipschitz(net, x0, eps, method="bab", timeout=0.5, progress=False)
    assert res.details["split"] == split


@pytest.mark.parametrize("n_in, expected", [(4, "input"), (12, "relu")])
def test_auto_split_for_output_bounds_halves_inputs_up_to_the_limit(monkeypatch, n_in, expected):
    """split="auto" for output bounds / proof goals: input halves up to INPUT_SPLIT_MAX_DIM
    inputs (outputs are continuous), sign splits above; the bounds hold either way."""
    import lipbound.bab as bab_pkg

    seen = []
    real = bab_pkg.bab_output_bounds

    def spy(*args, **kw):
        seen.append(kw["split"])
        return real(*args, **kw)

    monkeypatch.setattr(bab_pkg, "bab_output_bounds", spy)
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(n_in, 16), nn.ReLU(), nn.Linear(16, 2)).double().eval()
    x0 = torch.rand(n_in, dtype=torch.float64)
    lo, up = lipbound.output_bounds(net, x0, 0.2, method="bab", timeout=0.5, progress=False)
    assert seen == [expected]
    pts = x0 + 0.2 * (2 * torch.rand(2000, n_in, dtype=torch.float64) - 1)
    with torch.no_grad():
        y = net(pts)
    assert (y >= lo - 1e-9).all() and (y <= up + 1e-9).all()
