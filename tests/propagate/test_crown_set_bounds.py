"""Per-set CROWN rows (:func:`lipbound.propagate.intermediate.crown_set_bounds`): each set of a
batch bounds only the elements it needs. Every value must be the CROWN bound of its own
element on its own set (equal to the all-rows bound there, and containing sampled values),
and the Jacobian graph's backward pass, which uses them, must give the union path's gradient
norm bounds."""

from __future__ import annotations

import pytest
import torch

from lipbound.bounds.domains import LpBall
from lipbound.graph.shapes import nodes_needing_bounds
from lipbound.graph.trace import trace
from lipbound.jacobian.bound import jacobian_state, norm_upper
from lipbound.propagate import intermediate
from lipbound.propagate.driver import prepare_state
from lipbound.propagate.ibp import evaluate
from tests.models import mlp

DT = torch.float64


def _batch(n_in: int, B: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, n_in, generator=g, dtype=DT)
    eps = 0.05 + 0.6 * torch.rand(B, generator=g, dtype=DT)  # sets of very different sizes
    return x, eps


def test_per_set_rows_equal_the_all_rows_bound_and_contain_samples():
    net = mlp((5, 16, 16, 12, 3), seed=3).double()
    x, eps = _batch(5, 8, 0)
    graph = trace(net, x[:1])
    state = prepare_state(graph, LpBall(x, eps, float("inf")))
    pts = x[:, None] + eps[:, None, None] * (2 * torch.rand(8, 400, 5, dtype=DT) - 1)
    vals = evaluate(graph, pts.reshape(-1, 5))
    checked = 0
    for name in nodes_needing_bounds(graph):
        if name == graph.input:
            continue
        mask = intermediate.node_mask(state, name)
        if mask is None or mask.shape[0] == 1 or not bool(mask.any()):
            continue
        per = intermediate.crown_set_bounds(state, name, mask)
        full = intermediate.crown_node_bounds(state, name, None, 0)
        lo, up = per.lower.flatten(1), per.upper.flatten(1)
        assert torch.isfinite(up[mask]).all() and torch.isfinite(lo[mask]).all()
        fin = torch.isfinite(up)
        assert torch.allclose(up[fin], full.upper.flatten(1)[fin], rtol=1e-12, atol=1e-12)
        assert torch.allclose(lo[fin], full.lower.flatten(1)[fin], rtol=1e-12, atol=1e-12)
        v = vals[name].reshape(8, 400, -1)
        assert (v <= up[:, None] + 1e-9).all() and (v >= lo[:, None] - 1e-9).all()
        checked += int(mask.sum(1).max() < mask.any(0).sum())  # rows differ between sets
    assert checked > 0


def test_jacobian_backward_pass_per_set_matches_the_union_and_is_sound(monkeypatch):
    net = mlp((4, 24, 24, 24, 3), seed=5).double()
    x, eps = _batch(4, 12, 1)
    graph = trace(net, x[:1])
    C = torch.eye(3, dtype=DT)
    dom = LpBall(x, eps, float("inf"))
    calls = []
    real = intermediate.crown_set_bounds

    def spy(*a, **k):
        calls.append(a[1])
        return real(*a, **k)

    monkeypatch.setattr(intermediate, "crown_set_bounds", spy)
    with torch.no_grad():
        state, jg = jacobian_state(graph, C, dom, "crown", 1.0)
        per = norm_upper(state, jg, 1.0, "crown").reshape(12, 3)
    assert calls, "the per-set rows were not used"
    monkeypatch.setattr(intermediate, "PER_SET_MAX_SHARE", 0.0)  # the union of rows
    with torch.no_grad():
        state, jg = jacobian_state(graph, C, dom, "crown", 1.0)
        union = norm_upper(state, jg, 1.0, "crown").reshape(12, 3)
    assert torch.allclose(per, union, rtol=1e-9, atol=0)
    pts = (x[:, None] + eps[:, None, None] * (2 * torch.rand(12, 300, 4, dtype=DT) - 1))
    pts = pts.reshape(-1, 4).requires_grad_(True)
    y = net(pts)
    for s in range(3):
        grad = torch.autograd.grad(y[:, s].sum(), pts, retain_graph=True)[0]
        norms = grad.abs().sum(1).reshape(12, 300)
        assert (norms <= per[:, s:s + 1] * (1 + 1e-9)).all()


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_crown_needed_switches_by_share(monkeypatch, share):
    """The per-set path is taken exactly when the most rows one set needs is within
    PER_SET_MAX_SHARE of the union (a cost rule: both paths give the same bounds)."""
    net = mlp((5, 16, 16, 3), seed=3).double()
    x, eps = _batch(5, 8, 0)
    graph = trace(net, x[:1])
    state = prepare_state(graph, LpBall(x, eps, float("inf")))
    name = [n for n in nodes_needing_bounds(graph) if n != graph.input][-1]
    mask = intermediate.node_mask(state, name)
    rows = mask.any(0).nonzero().flatten()
    used = []
    monkeypatch.setattr(intermediate, "PER_SET_MAX_SHARE", share)
    monkeypatch.setattr(intermediate, "crown_set_bounds", lambda *a: used.append(1) or
                        intermediate.crown_node_bounds(state, name, rows, 0))
    intermediate._crown_needed(state, name, mask, rows)
    assert bool(used) == (int(mask.sum(1).max()) <= share * rows.numel())
