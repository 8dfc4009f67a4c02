"""Smoothing for any classifier (forward-only certificates on models the tracer refuses),
the engine's batched base-classifier radius, and local-margins' pay-or-skip planning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lipbound.errors import UnsupportedModelError
from lipbound.smoothing import Smooth
from lipbound.smoothing.engine import (
    EngineRadius,
    attack_radii,
    global_radii,
    margin_constants,
    model_support,
)

pytestmark = pytest.mark.usefixtures("single_thread")


class RunningLogSumExp(nn.Module):
    """A classifier that takes a running log-sum-exp of its input first: the tracer has no
    rule for ``aten.logcumsumexp``."""

    def __init__(self, d: int = 6, k: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, k))

    def forward(self, x):
        return self.net(torch.logcumsumexp(x.flatten(1), dim=1))


class RoundedInputs(nn.Module):
    """A classifier that rounds its input to quarters first (``aten.round``, which the tracer
    refuses)."""

    def __init__(self, d: int = 6, k: int = 3) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.lin = nn.Linear(d, k)

    def forward(self, x):
        return self.lin(torch.round(x.flatten(1) * 4) / 4)


def seq_linear(w, b: float) -> nn.Sequential:
    """``nn.Sequential(Linear)`` with logits ``(z/2, -z/2)``, ``z = w.x + b`` (float64):
    traceable; the true radius of every smoothed classifier at x is ``|z(x)| / ||w||``."""
    lin = nn.Linear(len(w), 2).double()
    w = torch.tensor(w, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([w / 2, -w / 2]))
        lin.bias.copy_(torch.tensor([b / 2, -b / 2], dtype=torch.float64))
    return nn.Sequential(lin).eval()


# ------------------------------------------------------------------------ any classifier
@pytest.mark.parametrize("model_cls,op", [(RunningLogSumExp, "aten.logcumsumexp"),
                                          (RoundedInputs, "aten.round")])
def test_black_box_models_certify_with_forward_only_certificates(model_cls, op):
    model = model_cls().eval()
    smooth = Smooth(model, 3, 0.25)
    x = torch.linspace(-1, 1, 6)
    assert op in model_support(model, x)
    for cert in ("cohen", "lvm"):
        c = smooth.certify(x, n0=50, n=1000, alpha=0.01, certificate=cert, seed=0)
        assert c.prediction >= 0 and c.radius > 0
    best = smooth.certify(x, n0=50, n=1000, alpha=0.01, certificate="best", seed=0)
    assert best.prediction >= 0 and best.radius > 0
    skipped = best.details["skipped"]
    assert set(skipped) == {"local-margins", "lipschitz"}
    assert "model not traceable" in skipped["local-margins"] and op in skipped["local-margins"]
    assert "Supported operators" not in skipped["local-margins"]  # one line, not the list
    assert set(best.details["candidates"]) == {"cohen", "lvm"}
    assert sum(v["alpha"] for v in best.details["candidates"].values()) == pytest.approx(0.01)
    # a certificate that needs bounds, asked for by name, says why it cannot run
    with pytest.raises(UnsupportedModelError, match=op):
        smooth.certify(x, n0=20, n=100, certificate="local-margins", seed=0)
    # a given constant makes lipschitz applicable to any classifier
    c = smooth.certify(x, n0=50, n=1000, alpha=0.01, certificate="best", seed=0,
                       candidates=["cohen", "lipschitz", "dual"], lipschitz_constant=50.0)
    assert set(c.details["candidates"]) == {"cohen", "lipschitz"}
    assert "DualPair" in c.details["skipped"]["dual"]


def test_best_with_no_applicable_candidate_raises():
    smooth = Smooth(RoundedInputs().eval(), 3, 0.25)
    with pytest.raises(UnsupportedModelError, match="no candidate"):
        smooth.certify(torch.zeros(6), n0=10, n=100, certificate="best", seed=0,
                       candidates=["local-margins", "lipschitz"])


# ------------------------------------------------------------------------ engine radius
def _relu_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(),
                         nn.Linear(12, 3)).eval()


def test_engine_radii_are_certified_and_below_attack_distances():
    net = _relu_net()
    gen = torch.Generator().manual_seed(0)
    pts = torch.randn(24, 4, generator=gen)
    with torch.no_grad():
        logits = net(pts)
    label = int(logits.argmax(1).mode().values)
    fn = EngineRadius(steps=6)
    r = fn.radii(net, pts, label, logits=logits)
    g = global_radii(net, pts, label, logits)
    a = attack_radii(net, pts, label, steps=20)
    pred = logits.argmax(1)
    assert torch.all((r < 0) == (pred != label))  # only points predicted label get radii
    hit = pred == label
    assert torch.all(r[hit] >= g[hit] - 1e-12)
    assert torch.all(r[hit] <= a[hit] + 1e-9)
    assert float((r[hit] > g[hit] * 1.01).float().mean()) > 0.3  # CROWN beats the global one
    for i in hit.nonzero().flatten().tolist():
        d = torch.randn(3000, 4, generator=gen)
        d = d / d.norm(dim=1, keepdim=True) * float(r[i]) * 0.999
        d = d * torch.rand(3000, 1, generator=gen) ** 0.25
        with torch.no_grad():
            assert torch.all(net(pts[i] + d).argmax(1) == label)
    # target mode: every point reaching the target is certified at it, none beyond its radius
    target = float(r[hit].median())
    rt = EngineRadius(steps=6).radii(net, pts, label, logits=logits, target=target)
    assert torch.all(rt[hit] >= torch.minimum(g[hit], torch.tensor(target)) - 1e-12)
    assert torch.all((rt >= target) <= hit)


def test_engine_radius_is_exact_on_a_linear_model():
    model = seq_linear([0.6, 0.8], -0.2)
    pts = torch.tensor([[1.0, 0.2], [0.5, 0.5], [2.0, -1.0]], dtype=torch.float64)
    exact = (pts @ torch.tensor([0.6, 0.8], dtype=torch.float64) - 0.2).abs()
    r = EngineRadius().radii(model, pts, 0)
    assert torch.all(r <= exact) and torch.all(r >= exact * (1 - 1e-4))
    pairs = margin_constants(model, pts[0])
    assert pairs[0, 1] == pytest.approx(1.0, rel=1e-9) and pairs[0, 1] >= 1.0


def test_engine_local_margins_independent_of_batch_size():
    """Bound calls are grouped by blocks of sample indices, not by batches."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    smooth = Smooth(model, 3, 0.1)
    x = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(0))
    kw = dict(n0=40, n=1200, alpha=0.01, certificate="local-margins", seed=4, n_local=700)
    ref = smooth.certify(x, batch_size=1200, **kw)
    assert ref.details["R"] > 0 and ref.details["bound_points"] > 0
    for bs in (64, 100, 5000):
        c = smooth.certify(x, batch_size=bs, **kw)
        assert (c.prediction, c.radius, c.details["k"]) == (ref.prediction, ref.radius,
                                                            ref.details["k"])


# ------------------------------------------------------------------------ pay or skip
def test_local_margins_pays_where_cohen_is_capped_and_best_keeps_it():
    """Small sigma, large true radius: Cohen hits its all-A cap and R > 0 pays."""
    model = seq_linear([0.6, 0.8], -0.2)
    x = torch.tensor([1.0, 0.2], dtype=torch.float64)  # true radius 0.56
    smooth = Smooth(model, 2, 0.15)
    lm = smooth.certify(x, n0=32, n=512, alpha=0.05, certificate="local-margins", seed=0)
    co = smooth.certify(x, n0=32, n=512, alpha=0.05, certificate="cohen", seed=0)
    assert lm.details["pays"] and lm.details["R"] > 0 and lm.radius > co.radius
    best = smooth.certify(x, n0=32, n=512, alpha=0.05, certificate="best", seed=0)
    assert "local-margins" in best.details["candidates"]
    assert "local-margins" not in best.details["skipped"]


def test_best_skips_local_margins_where_it_cannot_pay_without_bounding():
    """Large sigma: Cohen's radius is out of reach; the attack distances alone show it, so no
    bound is computed and best leaves local-margins out (unless asked for)."""
    model = seq_linear([0.6, 0.8], -0.2)
    x = torch.tensor([1.0, 0.2], dtype=torch.float64)
    smooth = Smooth(model, 2, 1.0)
    best = smooth.certify(x, n0=64, n=512, alpha=0.05, certificate="best", seed=0)
    why = best.details["skipped"]["local-margins"]
    assert "pay" in why and "no bound was computed" in why
    assert "local-margins" not in best.details["candidates"]
    forced = smooth.certify(x, n0=64, n=512, alpha=0.05, certificate="best", seed=0,
                            candidates=["cohen", "local-margins"])
    assert set(forced.details["candidates"]) == {"cohen", "local-margins"}
    lm = smooth.certify(x, n0=64, n=512, alpha=0.05, certificate="local-margins", seed=0)
    assert lm.details["R"] == 0 and not lm.details["pays"]


def test_best_skips_local_margins_from_the_logits_alone(monkeypatch):
    """A dead hidden unit with huge weights makes the certified global constant ~1e6 times
    the true one: the bisection ceilings (growth x global radius, from the logits) already
    show local-margins cannot pay, so neither an attack nor a bound is run."""
    from lipbound.smoothing import engine

    lin1, lin2 = nn.Linear(2, 3).double(), nn.Linear(3, 2).double()
    w = torch.tensor([0.6, 0.8], dtype=torch.float64)
    with torch.no_grad():
        lin1.weight.copy_(torch.stack([w, -w, torch.tensor([1e3, 0.0], dtype=torch.float64)]))
        lin1.bias.copy_(torch.tensor([-0.2, 0.2, -1e6], dtype=torch.float64))  # unit 3: dead
        lin2.weight.copy_(torch.tensor([[0.5, -0.5, 1e3], [-0.5, 0.5, -1e3]],
                                       dtype=torch.float64))
        lin2.bias.zero_()
    model = nn.Sequential(lin1, nn.ReLU(), lin2).eval()  # logits (z/2, -z/2), z = w.x - 0.2
    x = torch.tensor([1.0, 0.2], dtype=torch.float64)
    assert float(margin_constants(model, x)[0, 1]) > 1e5

    def no_attack(*args, **kwargs):
        raise AssertionError("an attack was run")

    monkeypatch.setattr(engine, "attack_radii", no_attack)
    smooth = Smooth(model, 2, 0.25)
    best = smooth.certify(x, n0=64, n=512, alpha=0.05, certificate="best", seed=0)
    why = best.details["skipped"]["local-margins"]
    assert "bisection ceilings" in why and "no bound was computed" in why
    assert best.prediction == 0 and best.radius > 0
