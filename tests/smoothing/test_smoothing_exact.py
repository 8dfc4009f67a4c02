"""Exact enumeration of all sample outcomes for small n (multinomial selection and estimation).

Each test sums the exact probability of every outcome in which the certificate's statement is
false and checks that it is at most alpha. The functions enumerated are the ones the
certificates call (selection rule, bounds, radius), so this checks the real code paths.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from lipbound.smoothing.bounds import clopper_pearson_lower
from lipbound.smoothing.certificates.cohen import cohen_radius, predict_from_counts
from lipbound.smoothing.certificates.dual import dual_radius
from lipbound.smoothing.certificates.soft import Moments, class_bounds

PROBS = [
    (0.6, 0.3, 0.1),
    (0.75, 0.2, 0.05),
    (0.5, 0.45, 0.05),
    (0.9, 0.05, 0.05),
    (0.4, 0.35, 0.25),
    (0.55, 0.44, 0.01),
]


def multinomial_outcomes(n: int, p):
    """Every count vector of n draws over len(p) classes, with its probability."""
    k = len(p)
    for cut in itertools.combinations(range(n + k - 1), k - 1):
        bounds = (-1, *cut, n + k - 1)
        counts = np.array([bounds[i + 1] - bounds[i] - 1 for i in range(k)])
        yield counts, float(stats.multinomial.pmf(counts, n, p))


def test_enumeration_sums_to_one():
    assert sum(pr for _, pr in multinomial_outcomes(7, (0.2, 0.3, 0.5))) == pytest.approx(1.0)


@pytest.mark.parametrize("p", PROBS)
@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_cohen_certify_exact(p, alpha):
    """Selection on n0 draws (argmax, ties to the lower index), CP bound on n draws: the
    statement "p_c >= p_low >= 1/2" is false with probability <= alpha."""
    n0, n, sigma = 5, 14, 1.0
    p = np.asarray(p)
    wrong = 0.0
    for sel, pr_sel in multinomial_outcomes(n0, p):
        c = int(np.argmax(sel))
        pk = stats.binom.pmf(np.arange(n + 1), n, p[c])
        for k in range(n + 1):
            p_low, radius = cohen_radius(k, n, alpha, sigma)
            if radius >= 0 and p_low > p[c]:
                wrong += pr_sel * pk[k]
    assert wrong <= alpha


@pytest.mark.parametrize("p", PROBS)
@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_predict_exact(p, alpha):
    """PREDICT returns a class other than the smoothed classifier's with probability <= alpha."""
    n = 20
    truth = int(np.argmax(p))
    wrong = sum(
        pr for counts, pr in multinomial_outcomes(n, p)
        if predict_from_counts(counts, alpha) not in (-1, truth)
    )
    assert wrong <= alpha


@pytest.mark.parametrize("p", PROBS)
@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_lvm_hardmax_bonferroni_exact(p, alpha):
    """Hardmax LVM: label chosen on n0 draws, one CP lower and K-1 CP upper bounds at alpha/K
    on n draws: some bound is violated with probability <= alpha."""
    n0, n = 3, 12
    p = np.asarray(p)
    k_cls = len(p)
    wrong = 0.0
    for sel, pr_sel in multinomial_outcomes(n0, p):
        label = int(np.argmax(sel / n0))
        for counts, pr in multinomial_outcomes(n, p):
            mean = counts / n
            mom = Moments(mean, np.zeros(k_cls), n)
            low, up = class_bounds("hardmax", mom, label, alpha / k_cls)
            others = np.delete(p, label)
            if low > p[label] or np.any(up < others):
                wrong += pr_sel * pr
    assert wrong <= alpha


@pytest.mark.parametrize("pl,pr", [(0.7, 0.8), (0.55, 0.95), (0.9, 0.4), (0.6, 0.6)])
@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_dual_exact(pl, pr, alpha):
    """DRS with a fixed class: the certified radius exceeds the radius the true vote shares
    give (exact for linear halves) with probability <= alpha."""
    n, sigma = 15, 1.0
    true_s = stats.norm.ppf(pl) + stats.norm.ppf(pr)
    true_r = sigma / math.sqrt(2) * true_s if true_s > 0 else -1.0
    pk_l = stats.binom.pmf(np.arange(n + 1), n, pl)
    pk_r = stats.binom.pmf(np.arange(n + 1), n, pr)
    wrong = 0.0
    for kl in range(n + 1):
        for kr in range(n + 1):
            _, _, r = dual_radius(kl, kr, n, alpha, sigma)
            if r > 0 and r > true_r:
                wrong += pk_l[kl] * pk_r[kr]
    assert wrong <= alpha


def test_clopper_pearson_is_tight_somewhere():
    """The exact coverage comes close to alpha for some p (the bound is not vacuous)."""
    n, alpha = 30, 0.1
    lows = np.array([clopper_pearson_lower(k, n, alpha) for k in range(n + 1)])
    worst = 0.0
    for p in lows[1:] * (1 - 1e-9):
        pmf = stats.binom.pmf(np.arange(n + 1), n, p)
        worst = max(worst, pmf[lows > p].sum())
    assert 0.099 < worst <= alpha
