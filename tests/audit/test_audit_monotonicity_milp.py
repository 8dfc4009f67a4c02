"""The monotonicity audit's MILP stage on ReLU chains whose answer is known by construction:
it proves a feature that the root relaxation cannot, and finds a verified witness in a slab
too thin for sampling, with exact derivative bounds either way."""

import pytest
import torch
from torch import nn

from lipbound import audit
from lipbound.audit._exact_stage import ExactStage
from lipbound.graph.trace import trace

WIDTH = 1e-7  # the slab where the slope is negative: sampling misses it


def _chain(w1, b1, w2, b2) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(len(w1[0]), len(w1)), nn.ReLU(), nn.Linear(len(w1), 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(w1))
        net[0].bias.copy_(torch.tensor(b1))
        net[2].weight.copy_(torch.tensor([w2]))
        net[2].bias.copy_(torch.tensor([b2]))
    return net.eval()


def slab_net() -> nn.Sequential:
    """f = x0 - 2 relu(x0 - 0.3) + 2 relu(x0 - 0.3 - WIDTH) + relu(x1) on [-1, 1]^2 (x0
    through relu(x0 + 3) - 3): d f / d x0 is -1 on a slab of width WIDTH, +1 elsewhere."""
    return _chain([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
                  [3.0, -0.3, -0.3 - WIDTH, 0.0], [1.0, -2.0, 2.0, 1.0], -3.0)


def staircase_net() -> nn.Sequential:
    """f = relu(x0) - 0.5 relu(x0 - 0.5) + relu(x1) - relu(x1 - 0.2): increasing in both
    (slopes 0, 1, 0.5 and 0, 1, 0), although the root bound of d f / d x0 is negative."""
    return _chain([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]],
                  [0.0, -0.5, 0.0, -0.2], [1.0, -0.5, 1.0, -1.0], 0.0)


def _stage(net):
    lo, hi = -torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    graph = trace(net.double(), lo[None])
    return ExactStage(graph, torch.ones(1, 1, dtype=torch.float64), lo, hi, 1e-9)


def test_stage_finds_the_thin_slab_and_its_exact_slope():
    st = _stage(slab_net()).decide(0, 1, -10.0, 30.0)
    assert st.status in ("optimal", "target")  # stopped at a solution below -tol, or exact
    assert st.lower <= -1.0  # certified (the exact minimum is -1)
    assert len(st.candidates) == 1
    x = st.candidates[0]
    assert 0.3 < float(x[0]) < 0.3 + WIDTH
    up = _stage(slab_net()).decide(0, -1, -10.0, 30.0)  # d f / d x0 <= 1, attained
    assert up.lower <= -1.0 and len(up.candidates) == 1
    assert not 0.3 <= float(up.candidates[0, 0]) <= 0.3 + WIDTH


def test_stage_proves_what_the_root_bound_cannot():
    st = _stage(staircase_net())
    r = st.decide(0, 1, -10.0, 30.0)
    assert r.status == "optimal" and r.lower >= -1e-9 and len(r.candidates) == 0
    assert st.decide(1, 1, -10.0, 30.0).lower >= -1e-9
    # decreasing in neither: min of -d f / d x0 is -1, a slope +1 region refutes it
    down = st.decide(0, -1, -10.0, 30.0)
    assert down.lower <= -1.0 and len(down.candidates) == 1


@pytest.mark.parametrize("net, want", [(slab_net, {0: "not monotone", 1: "increasing"}),
                                       (staircase_net, {0: "increasing", 1: "increasing"})])
def test_audit_decides_with_the_stage_when_the_search_cannot(net, want):
    """With one domain for the search (max_domains=1), the verdicts come from the MILP."""
    model = net()
    rep = audit.monotonicity(model, -torch.ones(2), torch.ones(2), timeout=30, max_domains=1,
                             progress=False)
    assert {v.feature: v.verdict for v in rep.features} == want
    v0 = rep.verdict(0)
    assert v0.stages and v0.stages[0]["sign"] == 1
    if want[0] == "not monotone":
        assert 0.3 < float(v0.witness[0]) < 0.3 + WIDTH
        assert v0.witness_derivative == pytest.approx(-1.0)
        assert v0.support_derivative == pytest.approx(1.0)
        assert v0.derivative_lower <= -1.0
    else:
        assert v0.derivative_lower >= -1e-9
