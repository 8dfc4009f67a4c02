"""alpha-CROWN's iterates run on a float32 copy of a float64 state
(:mod:`lipbound.propagate.iterate_state`); the returned bound is one float64 pass with the
kept parameters. Checked: sound (sampled outputs inside), as tight as float64 iterates on a
seeded family, and ill-conditioned states keep float64 iterates."""

from __future__ import annotations

import math

import torch
from torch import nn

from lipbound.bounds.domains import LpBall
from lipbound.inputs import get_traced
from lipbound.propagate import alpha
from lipbound.propagate.driver import bound_graph_spec, prepare_state
from tests.propagate.test_own_rounding import _cancelling_net


def _net(seed: int) -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if seed % 3 == 2:
        net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 6, 3),
                            nn.ReLU(), nn.Flatten(), nn.Linear(24, 3))
        x = torch.rand(1, 1, 9, 9, generator=g, dtype=torch.float64)
    else:
        net = nn.Sequential(nn.Linear(5, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(),
                            nn.Linear(24, 3))
        x = torch.randn(1, 5, generator=g, dtype=torch.float64)
    net = net.double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / p[0].numel() ** 0.5)
    return net, x


def _setup(net, x, eps):
    traced = get_traced(net, x, torch.float64, x.device)
    domain = LpBall(x, torch.tensor([eps], dtype=torch.float64), math.inf)
    state = prepare_state(traced.graph, domain, "crown")
    C = torch.cat([torch.eye(3), -torch.eye(3)]).to(torch.float64).unsqueeze(0)
    return traced.graph, domain, state, C


def test_float32_iterates_are_sound_and_as_tight(monkeypatch):
    """Seeded MLPs and CNNs: the bounds contain 2,000 sampled outputs, and the gain over
    CROWN from float32 iterates is at least 95 % of the gain from float64 iterates."""
    gain32 = gain64 = 0.0
    for seed in range(6):
        net, x = _net(seed)
        graph, domain, state, C = _setup(net, x, 0.15)
        crown = torch.cat([bound_graph_spec(state, graph.output, C[:, :3], "crown")[1],
                           -bound_graph_spec(state, graph.output, C[:, :3], "crown")[0]], 1)
        up32 = alpha.alpha_crown_upper(state, graph.output, C, iterations=15)
        monkeypatch.setattr(alpha, "ITERATE_DTYPE", None)
        up64 = alpha.alpha_crown_upper(state, graph.output, C, iterations=15)
        monkeypatch.undo()
        gain32 += float((crown - up32).sum())
        gain64 += float((crown - up64).sum())
        xs = domain.sample(2000, torch.Generator().manual_seed(seed))[:, 0]
        with torch.no_grad():
            ys = net(xs)
        vals = torch.cat([ys, -ys], 1)
        assert bool((vals <= up32).all())
    assert gain64 > 0
    assert gain32 >= 0.95 * gain64, (gain32, gain64)


def test_ill_conditioned_states_iterate_in_float64():
    """A net whose sums cancel 1e7-fold (float32 cannot see its 1e-12 ball) keeps float64
    iterates; an ordinary one gets the float32 copy (mutation: without the agreement check
    the first assertion fails)."""
    x0 = torch.randn(1, 3, generator=torch.Generator().manual_seed(100), dtype=torch.float64)
    graph, _, state, _ = _setup(_cancelling_net(0).double(), x0, 1e-12)
    C = torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64)
    bad = _uses_float32(state, graph.output, C)
    net, x = _net(0)
    graph, _, state2, C2 = _setup(net, x, 0.15)
    assert not bad
    assert _uses_float32(state2, graph.output, C2)


def _uses_float32(state, target, C) -> bool:
    from lipbound.propagate import own_rounding
    from lipbound.propagate.crown import crown_upper

    with torch.no_grad():
        crown = crown_upper(state, target, C)
        opt = alpha.init_params(state, target, C.shape[1])
        it_state, it_C, it_opt = alpha._low_precision(state, C, opt, crown)
        assert it_state.domain.center.dtype == torch.float32
        with own_rounding.disabled():
            first = crown_upper(it_state, target, it_C, opt=it_opt)
    return alpha._agrees(first, crown, state, target, C)
