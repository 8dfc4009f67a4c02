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
    # refuted by sampling alone, the verdict still carries the root's certified enclosure
    # (d|x1|/dx1 in [-1, 1]; a bound of the root domain, not the trivial [-inf, inf])
    assert -1.0 - 1e-6 <= v.derivative_lower and v.derivative_upper <= 1.0 + 1e-6


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


# --- the shipped tabular model: monotone / non-monotone by construction ---------------------


@pytest.fixture(scope="module")
def shipped():
    import lipbound
    from lipbound.models.diabetes import MONOTONE_FEATURES, NON_MONOTONE_FEATURE, diabetes_box

    model = lipbound.models.load("diabetes-mlp")
    lo, hi = diabetes_box()
    feats = [*MONOTONE_FEATURES, NON_MONOTONE_FEATURE]
    rep = audit.monotonicity(model, lo, hi, features=feats, timeout=20, progress=False)
    return model, lo.double(), hi.double(), rep


def test_shipped_model_is_certified_increasing_in_its_monotone_features(shipped):
    from lipbound.models.diabetes import MONOTONE_FEATURES

    model, lo, hi, rep = shipped
    g = torch.Generator().manual_seed(1)
    z = lo + torch.rand(4000, 10, generator=g, dtype=torch.float64) * (hi - lo)
    z.requires_grad_(True)
    (grad,) = torch.autograd.grad(model.double()(z).sum(), z)
    for j in MONOTONE_FEATURES:
        v = rep.verdict(j)
        assert v.verdict == "increasing", (j, v)
        assert v.derivative_lower >= -rep.tol
        # the certified enclosure holds at every sample, and is not vacuous
        assert float(grad[:, j].max()) <= v.derivative_upper
        assert v.derivative_upper < 10 * float(grad[:, j].max()) + 1e-6


def test_shipped_model_non_monotone_feature_has_a_verified_counterexample(shipped):
    from lipbound.models.diabetes import NON_MONOTONE_FEATURE as j

    model, lo, hi, rep = shipped
    v = rep.verdict(j)
    assert v.verdict == "not monotone"
    m64 = model.double()
    slopes = []
    for p, claimed in ((v.witness, v.witness_derivative), (v.support, v.support_derivative)):
        assert bool(((p >= lo) & (p <= hi)).all())
        d = _derivative(m64, p, j)  # autograd re-check
        assert d == pytest.approx(claimed, rel=1e-9, abs=1e-12)
        # a genuine violating pair: a finite difference along feature j inside the box
        h = 1e-4 * float(hi[j] - lo[j])
        a, b = p.clone().double(), p.clone().double()
        a[j], b[j] = max(float(lo[j]), float(p[j]) - h), min(float(hi[j]), float(p[j]) + h)
        with torch.no_grad():
            diff = float(m64(b[None]) - m64(a[None])) / float(b[j] - a[j])
        assert diff == pytest.approx(d, rel=1e-6)
        slopes.append(d)
    assert slopes[0] * slopes[1] < 0  # one increasing pair and one decreasing pair
    # by construction the age slopes are c_plus and -c_minus, both at least 0.05 in magnitude
    assert min(abs(s) for s in slopes) >= 0.05
    assert v.derivative_lower <= min(slopes) and max(slopes) <= v.derivative_upper
