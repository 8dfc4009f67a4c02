"""Monotonicity audit on models whose monotonicity is known by construction."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lipbound import audit
from lipbound.errors import InputError, ModelModeError


class Known(nn.Module):
    """f(x) = relu(x0) - 0.5 relu(x0 - 0.5) + relu(x1) + relu(-x1) - 2 x3 + relu(x0 + x2).

    On [-1, 1]^4: increasing in x0 (slopes 0, 1, 0.5, plus the last term's 0/1) although the
    root Jacobian bound is negative (the two x0 ReLUs relaxed independently give 1 - 0.5 - ...),
    not monotone in x1 (|x1|), increasing in x2 (relu(x0 + x2)), decreasing in x3.
    """

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(4, 5)
        self.l2 = nn.Linear(5, 1)
        with torch.no_grad():
            self.l1.weight.copy_(torch.tensor([[1., 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0],
                                               [0, -1, 0, 0], [1, 0, 1, 0]]))
            self.l1.bias.copy_(torch.tensor([0., -0.5, 0, 0, 0]))
            self.l2.weight.copy_(torch.tensor([[1., -0.5, 1, 1, 1]]))
            self.l2.bias.zero_()
        self.skip = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            self.skip.weight.copy_(torch.tensor([[0., 0, 0, -2]]))

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x))) + self.skip(x)


def _derivative(model, x, j):
    m = model.double()
    z = x.double().unsqueeze(0).requires_grad_(True)
    (g,) = torch.autograd.grad(m(z).sum(), z)
    return float(g[0, j])


@pytest.fixture(scope="module")
def report():
    model = Known().eval()
    return audit.monotonicity(model, -torch.ones(4), torch.ones(4), timeout=20, progress=False)


def test_verdicts_match_construction(report):
    got = {v.feature: v.verdict for v in report.features}
    assert got == {0: "increasing", 1: "not monotone", 2: "increasing", 3: "decreasing"}


def test_increasing_feature_needed_branching_and_bounds_enclose_slopes(report):
    v0 = report.verdict(0)
    assert v0.domains > 1  # the root bound alone cannot certify it
    assert v0.derivative_lower >= -1e-9
    assert v0.derivative_upper >= 1.5  # slope 1 + 1 - 0 is attained near x0 = 0.25, x2 = 0
    v3 = report.verdict(3)
    assert v3.derivative_lower <= -2 <= v3.derivative_upper <= 1e-9


def test_witness_and_support_have_verified_opposite_signs(report):
    v = report.verdict(1)
    model = Known().eval()
    assert v.witness is not None and v.support is not None
    for p in (v.witness, v.support):
        assert bool(((p >= -1) & (p <= 1)).all())
    dw, ds = _derivative(model, v.witness, 1), _derivative(model, v.support, 1)
    assert dw == pytest.approx(v.witness_derivative) and ds == pytest.approx(v.support_derivative)
    assert dw * ds < 0 and min(abs(dw), abs(ds)) > 0.5  # slopes are exactly +-1
    assert v.derivative_lower <= min(dw, ds) and max(dw, ds) <= v.derivative_upper


def test_report_is_json_ready(report):
    d = json.loads(json.dumps(report.to_dict()))
    assert [f["verdict"] for f in d["features"]] == [v.verdict for v in report.features]
    assert d["features"][1]["witness"] is not None


def test_timeout_gives_unknown_not_a_wrong_verdict():
    model = Known().eval()
    rep = audit.monotonicity(model, -torch.ones(4), torch.ones(4), features=[0], max_domains=1,
                             progress=False)
    assert rep.features[0].verdict == "unknown"


def test_bad_input_is_rejected():
    model = Known().eval()
    lo, hi = -torch.ones(4), torch.ones(4)
    with pytest.raises(InputError, match="lower > upper"):
        audit.monotonicity(model, hi, lo, progress=False)
    with pytest.raises(InputError, match="out of range"):
        audit.monotonicity(model, lo, hi, features=[4], progress=False)
    with pytest.raises(InputError, match="output"):
        audit.monotonicity(model, lo, hi, output=1, progress=False)
    with pytest.raises(InputError, match="timeout"):
        audit.monotonicity(model, lo, hi, timeout=0, progress=False)
    with pytest.raises(ModelModeError):
        audit.monotonicity(Known().train(), lo, hi, progress=False)
