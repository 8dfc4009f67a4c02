"""The MILP stage of method "bab" (issue 16): exactness where the search leaves a gap."""

from __future__ import annotations

import math

import pytest
import torch

import lipbound
from lipbound.bab import milp_stage as ms
from lipbound.bab.anytime import BabResult
from lipbound.bab.milp_stage import MAX_STAGE_INPUTS, milp_applies, milp_stage, open_rows
from lipbound.bounds.domains import LpBall
from lipbound.graph.trace import trace
from lipbound.jacobian.bound import jacobian_state
from tests.oracles import enumerate_local_lipschitz, random_sequential


def _net(seed: int, sizes=(3, 10, 10, 3), slope: float = 0.0) -> torch.nn.Module:
    return random_sequential(list(sizes), seed, slope).double().eval()


def _exact_fn(net, x, eps):
    def exact(rows, seconds):
        r = lipbound.local_lipschitz(net, x, eps, spec=torch.eye(3, dtype=torch.float64)[rows],
                                     method="exact", timeout=seconds)
        return r.upper, r.lower, r.witness, r.status == "certified"
    return exact


@pytest.mark.parametrize("seed,slope", [(0, 0.0), (1, 0.1), (2, 0.0)])
def test_milp_stage_agrees_with_enumeration_and_keeps_the_better_bounds(seed, slope):
    """From a loose search result (upper 10x, lower 0), the stage returns per row the exact
    value that pattern enumeration finds, and never loosens a row the search had closed."""
    net = _net(seed, slope=slope)
    x = torch.randn(3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    eps = 0.3
    exact = [enumerate_local_lipschitz(net, x, eps, p=math.inf, c=torch.eye(3)[s]).value
             for s in range(3)]
    ex = torch.tensor(exact, dtype=torch.float64)
    upper = ex * 10
    upper[0] = ex[0] * (1 + 1e-9)  # a row the search closed: the stage must keep it
    res = BabResult(upper, torch.zeros(3, dtype=torch.float64), torch.zeros(3, 3,
                    dtype=torch.float64), "timeout", 1)
    assert open_rows(res, focus_max=False).tolist()[-1] in (1, 2)
    out, info = milp_stage(res, _exact_fn(net, x, eps), False, 30.0, lambda: 0.0)
    assert info["ran"] and out.status == "certified"
    assert torch.allclose(out.upper, ex, rtol=1e-6)
    assert bool((out.upper >= ex * (1 - 1e-9)).all() and (out.lower <= ex * (1 + 1e-9)).all())
    assert float(out.upper[0]) == float(upper[0])


def test_milp_applies_to_relu_chains_with_inf_or_l1_balls_only():
    net = _net(0)
    g = trace(net, torch.zeros(1, 3, dtype=torch.float64))
    assert milp_applies(g, math.inf) and milp_applies(g, 1.0) and not milp_applies(g, 2.0)
    tanh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(),
                               torch.nn.Linear(4, 2)).double().eval()
    assert not milp_applies(trace(tanh, torch.zeros(1, 3, dtype=torch.float64)), math.inf)


def test_milp_stage_only_up_to_max_stage_inputs():
    """Past MAX_STAGE_INPUTS inputs the search keeps its whole budget (the gradient-sign
    binaries make the MILP too slow to pay for half of it)."""
    for d in (MAX_STAGE_INPUTS, MAX_STAGE_INPUTS + 1):
        net = torch.nn.Sequential(torch.nn.Linear(d, 4), torch.nn.ReLU(),
                                  torch.nn.Linear(4, 2)).double().eval()
        g = trace(net, torch.zeros(1, d, dtype=torch.float64))
        assert milp_applies(g, math.inf) == (d <= MAX_STAGE_INPUTS)


def test_bab_with_the_stage_brackets_the_exact_value():
    """Through the API: whatever the stage does within the budget, lower <= exact <= upper
    per row, and the details say whether the stage ran."""
    net = _net(5, sizes=(4, 16, 16, 3))
    x = torch.rand(4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    r = lipbound.local_lipschitz(net, x, 0.4, method="bab", objective="rows", timeout=6,
                                 progress=False)
    exact = [enumerate_local_lipschitz(net, x, 0.4, p=math.inf, c=torch.eye(3)[s]).value
             for s in range(3)]
    for s in range(3):
        assert float(r.lower[s]) <= exact[s] * (1 + 1e-9) <= float(r.upper[s]) * (1 + 2e-9)
    assert "ran" in r.details["milp_stage"]


def test_milp_stage_only_with_few_undecided_relus():
    """The stage runs only where method crown leaves at most MAX_STAGE_UNDECIDED ReLU inputs
    undecided (the count is a brute count over the pre-activation bounds); past it the
    search keeps the whole budget and the details say why."""
    net = _net(3, sizes=(3, 40, 40, 3))
    x = torch.zeros(3, dtype=torch.float64)
    g = trace(net, x[None])
    ball = LpBall(x[None], torch.tensor([2.0], dtype=torch.float64), math.inf)
    st, _ = jacobian_state(g, torch.eye(3, dtype=torch.float64), ball, "crown", 1.0)
    relu_in = [n.inputs[0] for n in g.nodes if n.op == "relu"]
    brute = sum(int(((st.bounds[z].lower < 0) & (st.bounds[z].upper > 0)).sum())
                for z in relu_in)
    assert len(relu_in) == 2 and brute > 1
    old = ms.MAX_STAGE_UNDECIDED
    try:
        for cap, worth in ((brute, True), (brute - 1, False)):
            ms.MAX_STAGE_UNDECIDED = cap
            assert ms.stage_worth(g, st.bounds) == (worth, brute)
        ms.MAX_STAGE_UNDECIDED = brute - 1
        r = lipbound.local_lipschitz(net, x, 2.0, method="bab", timeout=0.5, progress=False)
        assert "undecided" in r.details["milp_stage"].get("skipped", "")
    finally:
        ms.MAX_STAGE_UNDECIDED = old
