"""Input-splitting branch-and-bound: sound at every step, never loosened by splitting, and
convergent to the exact local Lipschitz constant on low-dimensional inputs."""

from __future__ import annotations

import math

import pytest
import torch

import lipbound
from lipbound.errors import InputError, UnsupportedModelError
from tests.oracles import enumerate_local_lipschitz, random_sequential


def _net(seed: int, slope: float = 0.0, sizes=(2, 12, 12, 2)) -> torch.nn.Module:
    return random_sequential(list(sizes), seed, slope).double().eval()


@pytest.mark.parametrize("seed,slope,norm", [(0, 0.0, math.inf), (1, 0.1, math.inf),
                                             (2, 0.0, 1.0)])
def test_bab_brackets_exact_value_at_every_step_and_converges(seed, slope, norm):
    """l_1 balls are covered by boxes that stick out of the ball, so there only the bracket
    is asserted; for l_inf the search must close the gap."""
    net = _net(seed, slope)
    x = torch.randn(2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    eps, spec = 0.4, torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    exact = enumerate_local_lipschitz(net, x, eps, p=norm, c=spec[0]).value
    crown = lipbound.local_lipschitz(net, x, eps, norm=norm, spec=spec, n_samples=1).value
    r = lipbound.local_lipschitz(net, x, eps, norm=norm, spec=spec, method="bab",
                                 timeout=60 if norm == math.inf else 10, progress=False)
    tol = 1e-7 * (1 + exact)
    assert r.value >= exact - tol and float(r.lower.max()) <= exact + tol
    assert r.value <= crown + tol
    trace = r.details["trace"]
    for (_, up, lo, _), (_, up2, lo2, _) in zip(trace, trace[1:]):
        assert up2 <= up + tol and lo2 >= lo - tol  # anytime: never loosens
    for _, up, lo, _ in trace:
        assert lo <= exact + tol <= up + 2 * tol
    if norm == math.inf:  # sub-boxes tile the l_inf ball exactly: the gap closes
        assert r.status == "certified" and r.value <= exact * (1 + 2e-4) + 1e-9


def test_bab_witness_attains_the_lower_bound():
    net = _net(3)
    x = torch.zeros(2, dtype=torch.float64)
    r = lipbound.local_lipschitz(net, x, 0.5, method="bab", timeout=20, progress=False)
    w = r.witness[0].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(w.unsqueeze(0))[0, 0], w)
    assert float(g.abs().sum()) == pytest.approx(float(r.lower[0]), rel=1e-9)
    assert float((w.detach() - x).abs().max()) <= 0.5 + 1e-12


def test_bab_output_bounds_contain_samples_and_tighten_crown():
    net = _net(4, sizes=(3, 16, 16, 2))
    x = torch.randn(3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    lo_c, up_c = lipbound.output_bounds(net, x, 0.3)
    lo_b, up_b = lipbound.output_bounds(net, x, 0.3, method="bab", timeout=10, progress=False)
    assert (lo_b >= lo_c - 1e-9).all() and (up_b <= up_c + 1e-9).all()
    pts = x + 0.3 * (2 * torch.rand(4000, 3, generator=torch.Generator().manual_seed(5),
                                    dtype=torch.float64) - 1)
    y = net(pts)
    assert (y >= lo_b - 1e-9).all() and (y <= up_b + 1e-9).all()
    assert float((up_b - lo_b).sum()) < float((up_c - lo_c).sum())


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_bab_rejects_nonpositive_timeout(timeout):
    net = _net(0)
    with pytest.raises(InputError, match="timeout"):
        lipbound.local_lipschitz(net, torch.zeros(2), 0.1, method="bab", timeout=timeout)
    with pytest.raises(InputError, match="timeout"):
        lipbound.output_bounds(net, torch.zeros(2), 0.1, method="bab", timeout=timeout)


@pytest.mark.parametrize("seed,slope,norm", [(0, 0.0, math.inf), (1, 0.1, math.inf),
                                             (5, 0.0, 1.0)])
def test_relu_split_bab_reaches_the_exact_constant(seed, slope, norm):
    """Sign splitting with LP feasibility goes below the maximum over all patterns: it ends
    at the exact constant (enumeration), and brackets it at every step."""
    net = _net(seed, slope, sizes=(6, 12, 12, 2))
    x = torch.randn(6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    spec = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    exact = enumerate_local_lipschitz(net, x, 0.3, p=norm, c=spec[0]).value
    r = lipbound.local_lipschitz(net, x, 0.3, norm=norm, spec=spec, method="bab",
                                 split="relu", timeout=60, progress=False)
    tol = 1e-7 * (1 + exact)
    for _, up, lo, _ in r.details["trace"]:
        assert lo <= exact + tol <= up + 2 * tol
    assert r.details["split"] == "relu"
    if norm == math.inf:
        assert r.status == "certified" and abs(r.value - exact) <= 1e-6 * exact


def test_relu_split_rejects_non_mlp_with_a_clear_error():
    from lipbound.errors import UnsupportedModelError

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    with pytest.raises(UnsupportedModelError, match="tanh"):
        lipbound.local_lipschitz(net.eval(), torch.zeros(3), 0.1, method="bab", split="relu")
    with pytest.raises(InputError, match="split"):
        lipbound.local_lipschitz(net.eval(), torch.zeros(3), 0.1, method="bab", split="cols")


def test_input_split_weight_is_the_first_layer_column_mass():
    from lipbound.api import _setup
    from lipbound.bab.lipschitz import first_layer_weight

    net = _net(6, sizes=(3, 5, 2))
    traced, _, C, _ = _setup(net, torch.zeros(3), 0.1, math.inf, None, None, torch.float64)
    graph = traced.graph
    w = first_layer_weight(graph, C)
    assert torch.allclose(w, net[0].weight.abs().sum(0).double())
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8, 2)).double().eval()
    traced, _, C, _ = _setup(cnn, torch.zeros(1, 4, 4), 0.1, math.inf, None, None,
                            torch.float64)
    graph = traced.graph
    assert first_layer_weight(graph, C) is None


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu_split_output_bounds_contain_samples_and_tighten_crown(slope):
    net = _net(7, slope, sizes=(6, 16, 16, 3))
    x = torch.randn(6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    lo_c, up_c = lipbound.output_bounds(net, x, 0.4)
    lo_b, up_b = lipbound.output_bounds(net, x, 0.4, method="bab", split="relu", timeout=8,
                                        progress=False)
    assert (lo_b >= lo_c - 1e-9).all() and (up_b <= up_c + 1e-9).all()
    pts = x + 0.4 * (2 * torch.rand(20000, 6, generator=torch.Generator().manual_seed(8),
                                    dtype=torch.float64) - 1)
    y = net(pts)
    assert (y >= lo_b - 1e-9).all() and (y <= up_b + 1e-9).all()
    assert float((up_b - lo_b).sum()) < 0.9 * float((up_c - lo_c).sum())


def test_relu_split_output_bounds_reject_a_model_without_relus():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Sigmoid(), torch.nn.Flatten(),
                              torch.nn.Linear(8, 2)).eval()
    with pytest.raises(UnsupportedModelError, match="sigmoid"):
        lipbound.output_bounds(net, torch.zeros(1, 4, 4), 0.1, method="bab", split="relu",
                               timeout=1)


@pytest.mark.parametrize("split", ["input", "relu"])
def test_objective_max_certifies_the_largest_row_and_keeps_every_row_sound(split):
    net = _net(8, sizes=(2, 10, 10, 3))
    x = torch.randn(2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    exact = [enumerate_local_lipschitz(net, x, 0.4, c=torch.eye(3, dtype=torch.float64)[s])
             .value for s in range(3)]
    r = lipbound.local_lipschitz(net, x, 0.4, method="bab", split=split, timeout=30,
                                 progress=False, objective="max")
    tol = 1e-7 * (1 + max(exact))
    assert r.status == "certified" and r.details["objective"] == "max"
    assert abs(r.value - max(exact)) <= 2e-4 * max(exact) + tol
    assert all(float(u) >= e - tol for u, e in zip(r.upper, exact))
    with pytest.raises(InputError, match="objective"):
        lipbound.local_lipschitz(net, x, 0.4, method="bab", objective="mean")


@pytest.mark.parametrize("split", ["input", "relu"])
def test_prove_above_reaches_a_threshold_between_crown_and_the_true_minimum(split):
    net = _net(7, 0.0, sizes=(6, 16, 16, 3))
    x = torch.randn(6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    spec = torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64)
    lo_c, _ = lipbound.output_bounds(net, x, 0.4, spec=spec)
    pts = x + 0.4 * (2 * torch.rand(20000, 6, generator=torch.Generator().manual_seed(9),
                                    dtype=torch.float64) - 1)
    with torch.no_grad():
        true_min = float((net(pts) @ spec.t()).min())
    d = float(lo_c[0]) + 0.5 * (true_min - float(lo_c[0]))
    lo_b, _ = lipbound.output_bounds(net, x, 0.4, spec=spec, method="bab", split=split,
                                     timeout=30, progress=False, prove_above=[d])
    assert d < float(lo_b[0]) <= true_min + 1e-9
    with pytest.raises(InputError, match="prove_above"):
        lipbound.output_bounds(net, x, 0.4, spec=spec, method="bab", prove_above=[0.0, 1.0])


def test_lazy_rows_keep_the_parent_bound_of_rows_below_the_threshold():
    from lipbound.api import _setup
    from lipbound.bab.relu_split import LipschitzSearch

    net = _net(9, sizes=(3, 8, 8, 4))
    x = torch.randn(3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    traced, _, C, dom = _setup(net, x, 0.5, math.inf, None, None, torch.float64)
    graph = traced.graph
    srch = LipschitzSearch(net, graph, C, dom, 1.0)
    signs = [torch.zeros(1, 8), torch.zeros(1, 8)]
    full = srch.bound(signs)[0]
    parent = full + torch.tensor([[0.0, 5.0, 0.0, 0.0]], dtype=torch.float64)
    lazy = srch.bound(signs, parent, float(parent[0, 1]))[0]  # only row 1 reaches it
    assert torch.equal(lazy[:, [0, 2, 3]], parent[:, [0, 2, 3]])
    assert torch.allclose(lazy[:, 1], full[:, 1])


def test_an_undecided_lp_does_not_switch_the_lp_checks_off(monkeypatch):
    """An LP that hits its time limit (a loaded machine) rations later LPs by their share of
    the search time instead of disabling them: LPs keep running and the search still closes
    the gap to the exact value."""
    from lipbound.bab import relu_split
    from lipbound.bab.lp import LpAnswer

    calls = {"n": 0}
    real = relu_split.sign_lp

    def first_undecided(*args, **kwargs):
        calls["n"] += 1
        return LpAnswer("undecided") if calls["n"] == 1 else real(*args, **kwargs)

    monkeypatch.setattr(relu_split, "sign_lp", first_undecided)
    # one split per step, so that the gap closes through LP-checked leaves (splitting several
    # neurons per step closes this net's gap before any domain needs an LP)
    monkeypatch.setattr("lipbound.bab.search.DEEPEN_LEVELS", 0)
    net = _net(4, sizes=(10, 16, 16, 2))
    x = torch.randn(10, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    r = lipbound.local_lipschitz(net, x, 0.3, method="bab", split="relu", timeout=120,
                                 progress=False)  # generous: the root alone is ~1 s quiet
    exact = lipbound.local_lipschitz(net, x, 0.3, method="exact")
    assert calls["n"] > 1, (calls, r.status, r.details["domains_bounded"])
    assert r.value >= exact.value * (1 - 1e-6)
    assert r.status == "certified" and r.value <= exact.value * (1 + 1e-3)
