"""Robustness audit: closed forms on linear classifiers, certified <= attacked, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lipbound import audit
from lipbound.errors import InputError, UnknownMethodError, UnsupportedNormError
from tests.models import mlp


def _linear(seed=0, n_in=5, K=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, K)).eval()


def _closed_form(model, x, y, q):
    W, b = model[0].weight.detach().double(), model[0].bias.detach().double()
    f = W @ x.double() + b
    return min(float((f[y] - f[k]) / torch.linalg.vector_norm(W[y] - W[k], ord=q))
               for k in range(W.shape[0]) if k != y)


@pytest.mark.parametrize("norm,q", [(math.inf, 1), (2, 2)])
def test_linear_classifier_radius_matches_closed_form(norm, q):
    model = _linear()
    X = torch.randn(2, 5, generator=torch.Generator().manual_seed(1))
    y = model(X).argmax(1)
    rep = audit.robustness(model, X, y, eps_max=5.0, norm=norm, methods=("bounds", "lipschitz"),
                           attack=False, bisection_steps=14, progress=False)
    for rec, x in zip(rep.records, X):
        true = _closed_form(model, x, int(rec.label), q)
        assert true < 5.0
        assert rec.radii["lipschitz"] <= true and rec.radii["lipschitz"] >= true * (1 - 1e-6)
        assert rec.radii["bounds"] <= true
        assert rec.radii["bounds"] >= true - 5.0 / 2 ** 14 - 1e-9


def test_certified_radius_never_exceeds_attack_radius():
    model = mlp((4, 16, 16, 3), seed=3)
    X = torch.rand(3, 4, generator=torch.Generator().manual_seed(2))
    y = model(X).argmax(1)
    y[0] = (y[0] + 1) % 3  # one misclassified point: radius 0 everywhere
    rep = audit.robustness(model, X, y, eps_max=1.0, methods=("bounds", "lipschitz"),
                           bisection_steps=6, progress=False)
    assert rep.records[0].radii == {"bounds": 0.0, "lipschitz": 0.0}
    assert rep.records[0].attack_radius == 0.0
    for rec in rep.records:
        if rec.attack_radius is not None:
            assert max(rec.radii.values()) <= rec.attack_radius
    curves = rep.curves([0.0, 0.1, 0.3, 1.0])
    for acc in curves.values():
        assert all(a >= b for a, b in zip(acc, acc[1:]))
        assert acc[0] <= 2 / 3
    assert curves["attack"][0] == pytest.approx(2 / 3)
    for m in ("bounds", "lipschitz"):
        assert all(c <= a for c, a in zip(curves[m], curves["attack"]))
    json.dumps(rep.to_dict())


def test_smoothing_on_linear_binary_classifier_is_below_the_true_radius():
    lin = nn.Linear(3, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
        lin.bias.fill_(0.3)

    class TwoLogits(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            z = self.lin(x)
            return torch.cat([torch.zeros_like(z), z], 1)

    model = TwoLogits().eval()
    X = torch.tensor([[0.5, -0.2, 0.1], [-0.3, 0.4, 0.0]])
    y = model(X).argmax(1)
    rep = audit.robustness(model, X, y, eps_max=2.0, norm=2, methods=("smoothing",),
                           smooth={"sigma": 0.25, "n": 2000}, attack=False, progress=False)
    for rec, x in zip(rep.records, X):
        with torch.no_grad():
            true = abs(float(lin(x[None]))) / float(lin.weight.norm())
        assert 0 < rec.radii["smoothing"] <= true


def test_bad_input_is_rejected():
    model = _linear()
    X = torch.zeros(2, 5)
    with pytest.raises(UnknownMethodError):
        audit.robustness(model, X, [0, 1], eps_max=0.1, methods=("magic",), progress=False)
    with pytest.raises(InputError, match="labels"):
        audit.robustness(model, X, [0, 7], eps_max=0.1, progress=False)
    with pytest.raises(InputError, match="eps_max"):
        audit.robustness(model, X, [0, 1], eps_max=0, progress=False)
    with pytest.raises(UnsupportedNormError):
        audit.robustness(model, X, [0, 1], eps_max=0.1, smooth={"sigma": 0.1}, progress=False)
    with pytest.raises(InputError, match="bab_timeout"):
        audit.robustness(model, X, [0, 1], eps_max=0.1, bab_timeout=-1, progress=False)


def test_bab_timeout_zero_keeps_crown_radii():
    """bab_timeout=0 skips the BaB stage: each radius is certified by CROWN itself (checked by
    a direct output_bounds call) and never exceeds the attack radius."""
    import lipbound
    from lipbound.specs import margin_spec

    model = mlp((4, 16, 16, 3), seed=3)
    X = torch.rand(3, 4, generator=torch.Generator().manual_seed(2))
    y = model(X).argmax(1)
    rep = audit.robustness(model, X, y, eps_max=1.0, methods=("bounds",), bisection_steps=6,
                           bab_timeout=0, progress=False)
    for rec, x in zip(rep.records, X):
        r = rec.radii["bounds"]
        assert rec.details["bounds_method"] == "crown" and r > 0
        C = margin_spec(rec.label, 3, torch.float64, x.device)
        lower = lipbound.output_bounds(model, x, r, spec=C, method="crown").lower
        assert bool((lower > 0).all())
        if rec.attack_radius is not None:
            assert r <= rec.attack_radius
