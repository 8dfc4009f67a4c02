"""The MILP stage of verify against exact answers on small random ReLU networks.

The oracle is :func:`exact_margin` of test_search_exact (one LP per activation pattern): a
conjunction ``C f <= d`` is reachable iff its exact margin is >= 0. Each case shifts ``d`` so
that the exact margin of every disjunct is +-0.05: the MILP must refute a region exactly when
no disjunct is reachable, and otherwise return a point that the executor confirms.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipbound.io.vnnlib import Conjunction, InputRegion
from lipbound.io.vnnlib_property import VnnlibProperty
from lipbound.verify import milp as vm
from lipbound.verify import verify
from lipbound.verify.falsify import Checker, screen
from lipbound.verify.milp import milp_region
from tests.verify.test_search_exact import _net, exact_margin


def _conjunction(net, lo, up, gen, margin: float) -> Conjunction:
    C = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    m0 = exact_margin(net, lo, up, C.numpy(), np.zeros(2))
    d = torch.full((2,), margin - m0, dtype=torch.float64)
    assert abs(exact_margin(net, lo, up, C.numpy(), d.numpy()) - margin) < 1e-7
    return Conjunction(C, d)


def _region(seed: int, margins: list[float], n_in: int = 2):
    net = _net(n_in, 6, seed)
    gen = torch.Generator().manual_seed(seed)
    lo, up = -np.ones(n_in), np.ones(n_in)
    conj = tuple(_conjunction(net, lo, up, gen, m) for m in margins)
    return net, InputRegion(torch.from_numpy(lo), torch.from_numpy(up), conj)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("margins", [[-0.05], [0.05], [-0.05, -0.05], [-0.05, 0.05],
                                     [0.05, -0.05, -0.05]])
def test_milp_verdict_agrees_with_exact_patterns(seed, margins):
    net, region = _region(seed, margins)
    ids = list(range(len(margins)))
    out = milp_region(net, region, ids, (2,), 30.0)
    if max(margins) < 0:  # no disjunct reachable: refuted, no candidate
        assert out.refuted and out.point is None, out.why
    else:  # some disjunct reachable: never refuted, and the candidate is a real counterexample
        assert not out.refuted and out.point is not None, out.why
        found = screen(net, region, (2,), Checker(net, (2,)), out.point[None])
        assert found is not None
        x, y = found
        assert region.contains(x) and region.is_counterexample(x, y)


def test_only_the_open_disjuncts_count():
    """A reachable disjunct that is not among ``ids`` (already refuted elsewhere, say) does
    not stop the others from being refuted."""
    net, region = _region(5, [0.05, -0.05])
    assert milp_region(net, region, [1], (2,), 30.0).refuted
    assert not milp_region(net, region, [0, 1], (2,), 30.0).refuted


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_early_stop_never_refutes_a_reachable_region(seed, monkeypatch):
    """HiGHS stopped at its first solution (target raised to +inf-like): whatever that
    solution's value, only the solver's lower bound may refute, and on a reachable region it
    never exceeds the margin."""
    net, region = _region(seed, [0.05, -0.05])
    monkeypatch.setattr(vm, "TARGET", 1e9)
    assert not milp_region(net, region, [0, 1], (2,), 30.0).refuted


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_time_limit_without_a_solution_gives_no_candidate(seed, monkeypatch):
    """HiGHS stopped early (a microsecond limit): cvxpy still fills the variables (with
    zeros) when it has no solution; what comes back as a candidate must be a solution (a real
    counterexample of this reachable region), and nothing may refute it."""
    net, region = _region(seed, [0.05])
    solve = vm._solve
    monkeypatch.setattr(vm, "_solve", lambda prob, x, sec, m, n: solve(prob, x, 1e-6, m, n))
    out = milp_region(net, region, [0], (2,), 30.0)
    assert not out.refuted
    if out.point is not None:
        assert screen(net, region, (2,), Checker(net, (2,)), out.point[None]) is not None


def test_milp_stage_skips_too_many_unstable_neurons_and_other_models(monkeypatch):
    net, region = _region(0, [-0.05])
    monkeypatch.setattr(vm, "MAX_UNSTABLE", 0)
    out = milp_region(net, region, [0], (2,), 30.0)
    assert not out.refuted and out.point is None and "MAX_UNSTABLE" in out.why
    tanh = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(),
                               torch.nn.Linear(6, 3)).double().eval()
    out = milp_region(tanh, region, [0], (2,), 30.0)
    assert not out.refuted and "MLP" in out.why


@pytest.mark.parametrize("margin, verdict", [(-0.05, "unsat"), (0.05, "sat")])
def test_verify_with_only_the_milp_stage(margin, verdict):
    """Through ``verify`` with the MILP as the only bounding stage: the verdict is the exact
    one, an unsat verdict is the MILP's, and a sat verdict carries a confirmed
    counterexample."""
    net, region = _region(6, [margin])
    prop = VnnlibProperty((region,), 2, 3, "test")
    res = verify(net, prop, 60, methods=("milp",), input_split=False, attack_rounds=0)
    assert res.verdict == verdict
    if verdict == "unsat":  # nothing else bounds here
        assert res.details["decided_by"] == "milp"
    else:  # the screening stage may find a point first; either way it is confirmed
        x, y = res.counterexample
        assert region.contains(x) and region.is_counterexample(x, y)
