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


def test_float32_iterates_are_sound_and_as_tight():
    """Seeded MLPs and CNNs: the bounds contain 2,000 sampled outputs, and the gain over
    CROWN from float32 iterates is at least 95 % of the gain from float64 iterates."""
    gain32 = gain64 = 0.0
    for seed in range(6):
        net, x = _net(seed)
        graph, domain, state, C = _setup(net, x, 0.15)
        crown = torch.cat([bound_graph_spec(state, graph.output, C[:, :3], "crown")[1],
                           -bound_graph_spec(state, graph.output, C[:, :3], "crown")[0]], 1)
        with alpha.iterate_in(torch.float32):
            up32 = alpha.alpha_crown_upper(state, graph.output, C, iterations=15)
        up64 = alpha.alpha_crown_upper(state, graph.output, C, iterations=15)
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
        with alpha.iterate_in(torch.float32):
            it_state, it_C, it_opt = alpha._low_precision(state, C, opt, crown)
        assert it_state.domain.center.dtype == torch.float32
        with own_rounding.disabled():
            first = crown_upper(it_state, target, it_C, opt=it_opt)
    return alpha._agrees(first, crown, state, target, C)


def test_each_set_keeps_its_best_iterate_under_shared_parameters():
    """In a Jacobian graph the forward relaxations' parameters are shared by the S spec rows
    of the batch ([1, ...] against bounds [S, 1]); the result must still be each row's best
    over the iterates, as the elementwise minimum of the tallied iterates of the same Adam
    trajectory, on six seeded nets (mutation: keeping a shared parameter only where every
    row improved leaves rows of four of them above that minimum)."""
    for seed in range(6):
        got, ref = _shared_case(seed, iterations=20)
        assert bool((got <= ref * (1 + 1e-9) + 1e-12).all()), (seed, got, ref)


def _shared_case(seed: int, iterations: int):
    from lipbound.jacobian.bound import jacobian_state
    from lipbound.propagate.crown import crown_upper

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                        nn.Linear(16, 4)).double().eval()
    x = torch.randn(1, 4, dtype=torch.float64)
    graph = get_traced(net, x, torch.float64, x.device).graph
    domain = LpBall(x, torch.tensor([0.3], dtype=torch.float64), math.inf)
    C = torch.eye(4, dtype=torch.float64)
    state, jg = jacobian_state(graph, C, domain, "crown", 1.0, bound_gradient=False)
    ones = torch.ones(4, 1, 1, dtype=torch.float64)
    got = alpha.alpha_crown_upper(state, jg.norm, ones, iterations=iterations)
    opt = alpha.init_params(state, jg.norm, 1)
    assert any(v.shape[0] == 1 for p in opt.values() for v in p.values())  # shared ones
    adam = alpha.Adam([{"params": list(p.values()), "lr": alpha._lr(state, n)}
                       for n, p in opt.items()], gamma=0.95)
    with torch.no_grad():
        ref = crown_upper(state, jg.norm, ones)
    for _ in range(iterations):
        adam.zero_grad()
        with torch.enable_grad():
            up = crown_upper(state, jg.norm, ones, opt=opt)
            up.sum().backward()
        ref = torch.minimum(ref, up.detach())
        adam.step()
        with torch.no_grad():
            for n, p in opt.items():
                alpha._project(state, n, p)
    with torch.no_grad():
        ref = torch.minimum(ref, crown_upper(state, jg.norm, ones, opt=opt))
    return got, ref
