"""Confidence bounds: Clopper–Pearson (exact enumeration), empirical Bernstein, binomial test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lipbound.smoothing.bounds import (
    binomial_pvalue,
    clopper_pearson_lower,
    clopper_pearson_upper,
    empirical_bernstein_bounds,
)
from lipbound.smoothing.certificates.cohen import cohen_radius


@pytest.mark.parametrize("n", [1, 2, 5, 13, 40])
@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.3])
def test_clopper_pearson_exact_coverage(n, alpha):
    """P_k~Bin(n,p)[lower(k) > p] <= alpha and P[upper(k) < p] <= alpha, exactly, on a p grid."""
    lows = np.array([clopper_pearson_lower(k, n, alpha) for k in range(n + 1)])
    ups = np.array([clopper_pearson_upper(k, n, alpha) for k in range(n + 1)])
    assert np.all(np.diff(lows) > 0) and np.all(lows <= ups)
    for p in np.concatenate([np.linspace(0.001, 0.999, 199), lows[1:], ups[:-1]]):
        pmf = stats.binom.pmf(np.arange(n + 1), n, p)
        assert pmf[lows > p].sum() <= alpha * (1 + 1e-9)
        assert pmf[ups < p].sum() <= alpha * (1 + 1e-9)


def test_clopper_pearson_matches_beta_quantile():
    # statsmodels' proportion_confint(k, n, 2 alpha, "beta")[0] == beta.ppf(alpha, k, n - k + 1)
    for k, n in [(1, 10), (50, 100), (99990, 100000)]:
        ref = stats.beta.ppf(0.001, k, n - k + 1)
        got = clopper_pearson_lower(k, n, 0.001)
        assert got <= ref and got == pytest.approx(ref, rel=1e-10)
    assert clopper_pearson_lower(0, 10, 0.1) == 0.0
    assert clopper_pearson_upper(10, 10, 0.1) == 1.0


def test_all_a_cap():
    """All n votes for A at alpha 0.001, n 100000: p_A = alpha^(1/n), radius 3.8115 sigma."""
    for sigma in (0.12, 0.25, 1.0):
        p, r = cohen_radius(100_000, 100_000, 0.001, sigma)
        assert p == pytest.approx(0.001 ** (1e-5), rel=1e-11)
        assert round(r / sigma, 4) == 3.8115


def test_abstain_exactly_below_one_half():
    n, alpha = 200, 0.01
    lows = [clopper_pearson_lower(k, n, alpha) for k in range(n + 1)]
    k_star = next(k for k in range(n + 1) if lows[k] >= 0.5)
    for k in range(n + 1):
        p, r = cohen_radius(k, n, alpha, 0.5)
        assert p == lows[k]
        assert (r < 0) == (p < 0.5)
        assert (r < 0) == (k < k_star)
    assert cohen_radius(k_star, n, alpha, 0.5)[1] >= 0


def test_empirical_bernstein_coverage_and_formula():
    rng = np.random.default_rng(0)
    n, alpha, reps = 50, 0.1, 4000
    # a skewed [0, 1] variable with known mean
    x = rng.beta(0.3, 2.0, size=(reps, n))
    mean_true = 0.3 / 2.3
    lo, up = empirical_bernstein_bounds(x.mean(1), x.std(1, ddof=1), n, alpha)
    assert np.mean(lo > mean_true) <= alpha
    assert np.mean(up < mean_true) <= alpha
    # formula of Maurer & Pontil (Thm 4)
    m, s = 0.4, 0.2
    lo1, up1 = empirical_bernstein_bounds(np.array([m]), np.array([s]), 100, 0.05)
    w = s * math.sqrt(2 * math.log(2 / 0.05) / 100) + 7 * math.log(2 / 0.05) / (3 * 99)
    assert up1[0] == pytest.approx(m + w, rel=1e-9) and up1[0] >= m + w
    assert lo1[0] <= m - w


def test_binomial_pvalue_current_scipy():
    assert binomial_pvalue(60, 100) == pytest.approx(stats.binomtest(60, 100).pvalue)
    assert binomial_pvalue(0, 0) == 1.0
    assert binomial_pvalue(10, 10) == pytest.approx(2 * 0.5**10)
