"""Coverage of every certificate over repeated certifications (DESIGN section 4).

For base classifiers whose smoothed decision boundary is known in closed form (a linear binary
classifier, a 1-D Lipschitz ramp, a DRS pair of linear halves), each certificate is run
``REPS`` times with independent seeds; a run fails when it predicts a class other than the
true one or certifies a radius larger than the true distance to the boundary. The failure rate
must be at most ``alpha`` plus three standard errors. A deliberately unsound certifier shows
that the harness detects violations. Larger versions run with ``-m slow``.
"""

from __future__ import annotations

import math

import pytest
import torch

from lipbound.smoothing import Smooth
from lipbound.smoothing.bounds import norm_ppf
from tests.smoothing.test_smoothing_support import (
    LinearBinary,
    Ramp1D,
    dual_truth,
    linear_dual,
    linear_radius,
)

pytestmark = pytest.mark.usefixtures("single_thread")


REPS = 1000
ALPHA = 0.1
N0, N = 32, 256
SMALL_GRID = [("softmax", 1.0), ("softmax", 4.0), ("sparsemax", 1.0), ("hardmax", 1.0)]


def _limit(alpha: float, reps: int) -> float:
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)


def _coverage(smooth, x, truth, reps, alpha=ALPHA, n0=N0, n=N, offset=0, **kw):
    true_class, true_radius = truth
    fails = abstains = 0
    radii = []
    for seed in range(offset, offset + reps):
        c = smooth.certify(x, n0=n0, n=n, alpha=alpha, seed=seed, batch_size=n, **kw)
        if c.prediction < 0:
            abstains += 1
            continue
        radii.append(c.radius)
        if c.prediction != true_class or c.radius > true_radius:
            fails += 1
    mean_radius = sum(radii) / max(len(radii), 1)
    return fails / reps, abstains / reps, mean_radius


def _linear():
    model = LinearBinary([0.6, 0.8], -0.2).eval()
    x = torch.tensor([1.0, 0.2])  # margin 0.56, true radius 0.56
    return model, x, model.true_class_radius(x)


def _check(rate, abstain_rate, mean_radius, true_radius, alpha=ALPHA, reps=REPS, min_frac=0.2):
    assert rate <= _limit(alpha, reps), f"failure rate {rate} > alpha + 3 SE"
    assert abstain_rate < 0.5, "the certificate abstains too often for the test to mean much"
    assert mean_radius > min_frac * true_radius


@pytest.mark.parametrize(
    "certificate,options",
    [
        ("cohen", {}),
        ("lvm", {"grid": SMALL_GRID}),
        ("lvm", {"grid": SMALL_GRID, "selection": "split"}),
        ("lipschitz", {"grid": SMALL_GRID[:3], "lipschitz_constant": 1.0}),
        ("local-margins", {}),
        ("best", {"grid": SMALL_GRID[1:3], "lipschitz_constant": 1.0}),
        ("best", {"grid": SMALL_GRID[1:3], "lipschitz_constant": 1.0, "mode": "select"}),
    ],
    ids=["cohen", "lvm", "lvm-split", "lipschitz", "local-margins", "best-union", "best-select"],
)
def test_coverage_linear(certificate, options):
    model, x, truth = _linear()
    sigma = 1.0
    smooth = Smooth(model, 2, sigma)
    opts = dict(options)
    if certificate in ("local-margins", "best"):
        opts["radius_fn"] = linear_radius(model)
    if certificate == "best":
        opts["candidates"] = ["cohen", "lvm", "lipschitz", "local-margins"]
    rate, abst, mean_r = _coverage(smooth, x, truth, REPS, certificate=certificate, **opts)
    _check(rate, abst, mean_r, truth[1])


def test_coverage_lipschitz_ramp():
    """On the ramp the Lipschitz certificate is exact in the limit: psi_L(H(x)) = x."""
    lip, sigma, x0 = 1.0, 0.5, 0.3
    smooth = Smooth(Ramp1D(lip).eval(), 2, sigma)
    rate, abst, mean_r = _coverage(
        smooth, torch.tensor([x0]), (0, x0), REPS, certificate="lipschitz",
        lipschitz_constant=lip, of="soft-outputs",
    )
    _check(rate, abst, mean_r, x0, min_frac=0.3)


def test_coverage_dual():
    w_l, b_l, w_r, b_r = 1.0, 0.3, -1.0, 0.4
    x = torch.tensor([[0.2, -0.1]])
    truth = dual_truth(x, w_l, b_l, w_r, b_r)
    smooth = Smooth(LinearBinary([1.0, 0.0], 0.0).eval(), 2, 0.5,
                    dual=linear_dual(w_l, b_l, w_r, b_r))
    rate, abst, mean_r = _coverage(smooth, x, truth, REPS, certificate="dual")
    _check(rate, abst, mean_r, truth[1])


def test_coverage_best_with_dual():
    """``best`` over hard votes, soft scores and DRS: each candidate certifies its own smoothed
    classifier, so a run fails when the *winner's* claim exceeds the winner's true radius.
    The main model and the DRS pair are tuned so that both kinds win sometimes."""
    w_l, b_l, w_r, b_r = 1.0, 0.3, -1.0, 0.4
    x = torch.tensor([[0.2, -0.1]])
    main = LinearBinary([1.0, 0.0], 0.45).eval()  # margin 0.65
    truths = {"dual": dual_truth(x, w_l, b_l, w_r, b_r)}  # radius 0.707
    truths["cohen"] = truths["lvm"] = main.true_class_radius(x)
    smooth = Smooth(main, 2, 0.5, dual=linear_dual(w_l, b_l, w_r, b_r))
    fails = abstains = 0
    winners = {}
    for seed in range(REPS):
        c = smooth.certify(x, n0=N0, n=N, alpha=ALPHA, seed=seed, batch_size=N,
                           certificate="best", candidates=["cohen", "lvm", "dual"],
                           grid=SMALL_GRID[:2])
        if c.prediction < 0:
            abstains += 1
            continue
        win = c.details["winner"]
        winners[win] = winners.get(win, 0) + 1
        true_class, true_radius = truths[win]
        fails += c.prediction != true_class or c.radius > true_radius
    assert fails / REPS <= _limit(ALPHA, REPS)
    assert abstains / REPS < 0.5
    assert winners.get("dual", 0) >= 50 and winners.get("dual", 0) <= REPS - 50  # both kinds win


def test_coverage_local_margins_engine_radius():
    """local-margins with its default radius (lipbound's batched CROWN bounds, global-radius
    and attack pre-screens, bound calls grouped by sample-index blocks) where R > 0 pays:
    small sigma, so Cohen's radius is capped well below the true radius."""
    from tests.smoothing.test_smoothing_any_model import seq_linear

    model = seq_linear([0.6, 0.8], -0.2)
    x = torch.tensor([1.0, 0.2], dtype=torch.float64)  # true radius 0.56
    smooth = Smooth(model, 2, 0.15)
    fails = abstains = positive = 0
    radii = []
    for seed in range(REPS):
        c = smooth.certify(x, n0=N0, n=N, alpha=ALPHA, seed=seed, batch_size=100,
                           certificate="local-margins")
        positive += c.details["R"] > 0
        if c.prediction < 0:
            abstains += 1
            continue
        radii.append(c.radius)
        fails += c.prediction != 0 or c.radius > 0.56
    assert positive >= REPS // 2  # the R > 0 path is what is tested
    _check(fails / REPS, abstains / REPS, sum(radii) / max(len(radii), 1), 0.56)


def test_coverage_best_with_optional_local_margins():
    """``best`` with its default candidates (local-margins optional: planned against the
    others, skipped where it does not pay, alpha renormalised over what runs)."""
    from tests.smoothing.test_smoothing_any_model import seq_linear

    model = seq_linear([0.6, 0.8], -0.2)
    x = torch.tensor([1.0, 0.2], dtype=torch.float64)
    smooth = Smooth(model, 2, 0.15)
    fails = abstains = 0
    radii = []
    kept = 0
    for seed in range(REPS):
        c = smooth.certify(x, n0=N0, n=N, alpha=ALPHA, seed=seed, batch_size=N,
                           certificate="best", grid=SMALL_GRID[1:3])
        kept += "local-margins" in c.details["candidates"]
        assert sum(v["alpha"] for v in c.details["candidates"].values()) <= ALPHA * (1 + 1e-12)
        if c.prediction < 0:
            abstains += 1
            continue
        radii.append(c.radius)
        fails += c.prediction != 0 or c.radius > 0.56
    assert 0 < kept  # both branches (kept, skipped) occur or local-margins always pays
    _check(fails / REPS, abstains / REPS, sum(radii) / max(len(radii), 1), 0.56)


@pytest.mark.parametrize(
    "sigma,certificate,options",
    [
        (0.5, "lipschitz", {"grid": SMALL_GRID[:3]}),
        (0.15, "local-margins", {"radius_fn": "global-lipschitz"}),
    ],
    ids=["lipschitz-engine-constants", "local-margins-global-radius"],
)
def test_coverage_with_engine_constants(sigma, certificate, options):
    """Certificates fed by the engine's certified global constants of the logit differences
    (no constant given): on the linear model they are exact (||w|| = 1), so these are the
    certificates at their most aggressive. At sigma 0.15 local-margins' R > 0 pays."""
    from tests.smoothing.test_smoothing_any_model import seq_linear

    model = seq_linear([0.6, 0.8], -0.2)
    x = torch.tensor([1.0, 0.2], dtype=torch.float64)  # true radius 0.56
    smooth = Smooth(model, 2, sigma)
    fails = abstains = used = 0
    radii = []
    for seed in range(REPS):
        c = smooth.certify(x, n0=N0, n=N, alpha=ALPHA, seed=seed, batch_size=N,
                           certificate=certificate, **options)
        d = c.details
        used += (d.get("R", 0) > 0) if certificate == "local-margins" else (
            d.get("map") != "hardmax")
        if c.prediction < 0:
            abstains += 1
            continue
        radii.append(c.radius)
        fails += c.prediction != 0 or c.radius > 0.56
    assert used >= REPS // 4  # the constant-fed path is what is tested
    _check(fails / REPS, abstains / REPS, sum(radii) / max(len(radii), 1), 0.56)


class _PlugIn:
    """An unsound certifier: Cohen's radius from the raw vote share, no confidence bound."""

    def __init__(self, smooth):
        self.smooth = smooth

    def certify(self, x, n0, n, alpha, seed, batch_size, **kw):
        c = self.smooth.certify(x, n0=n0, n=n, alpha=alpha, seed=seed, batch_size=batch_size)
        share = c.details["n_A"] / n
        c.radius = float(self.smooth.sigma * norm_ppf(share)) if share > 0.5 else 0.0
        c.prediction = c.details["label_selected"]
        return c


def test_harness_detects_an_unsound_certifier():
    model, x, truth = _linear()
    rate, _, _ = _coverage(_PlugIn(Smooth(model, 2, 1.0)), x, truth, 300)
    assert rate > _limit(ALPHA, 300)


@pytest.mark.slow
@pytest.mark.parametrize("certificate", ["cohen", "lvm", "local-margins", "best"])
def test_coverage_linear_large(certificate):
    """5000 runs at alpha 0.05 with the default grids."""
    model, x, truth = _linear()
    smooth = Smooth(model, 2, 1.0)
    opts = {}
    if certificate in ("local-margins", "best"):
        opts["radius_fn"] = linear_radius(model)
    if certificate == "best":
        opts["lipschitz_constant"] = 1.0
    rate, abst, mean_r = _coverage(smooth, x, truth, 5000, alpha=0.05, n=1000,
                                   offset=10_000, certificate=certificate, **opts)
    _check(rate, abst, mean_r, truth[1], alpha=0.05, reps=5000)
