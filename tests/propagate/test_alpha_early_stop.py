"""alpha-CROWN stopped once flat (:func:`lipbound.propagate.alpha.stop_when_flat`): fewer
steps, still sound (sampled outputs inside), never looser than CROWN, no effect outside the
block."""

from __future__ import annotations

import torch
from torch import nn

from lipbound.bounds.domains import make_domain
from lipbound.graph.trace import trace
from lipbound.propagate import alpha
from lipbound.propagate.alpha import alpha_crown_upper, stop_when_flat
from lipbound.propagate.crown import crown_upper
from lipbound.propagate.driver import prepare_state


def _setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 3)).double().eval()
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    graph = trace(net, x)
    dom = make_domain(x, 0.1, "inf", (0.0, 1.0))
    state = prepare_state(graph, dom, "crown")
    C = torch.eye(3, dtype=torch.float64)
    A = torch.cat([C, -C]).unsqueeze(0)
    return net, x, graph, state, A


def test_stopped_alpha_is_sound_and_not_looser_than_crown(monkeypatch):
    net, x, graph, state, A = _setup()
    calls = []
    real = alpha.crown_upper
    monkeypatch.setattr(alpha, "crown_upper", lambda *a, **k: calls.append(1) or real(*a, **k))
    full = alpha_crown_upper(state, graph.output, A, 30)
    n_full = len(calls)
    calls.clear()
    with stop_when_flat(1e-4):
        stopped = alpha_crown_upper(state, graph.output, A, 30)
    assert len(calls) < n_full
    calls.clear()
    again = alpha_crown_upper(state, graph.output, A, 30)  # the block's setting is gone
    assert len(calls) == n_full and torch.equal(again, full)
    with torch.no_grad():
        plain = crown_upper(state, graph.output, A)
    assert (stopped <= plain).all() and (full <= stopped + 1e-9 * stopped.abs().max()).any()
    pts = (x + 0.1 * (2 * torch.rand(2000, 1, 8, 8, dtype=torch.float64) - 1)).clamp(0, 1)
    vals = net(pts) @ A[0].t()
    assert (vals <= stopped + 1e-9).all()
