"""Confidence bounds used by the smoothing certificates.

Every bound here is one-sided at level ``alpha``: with probability at least ``1 - alpha``
over the samples, the true mean lies above a lower bound (or below an upper bound).
Certificates combine several bounds with explicit union bounds (Bonferroni); the split of
alpha is documented in each certificate module.

The results are nudged outward by a relative ``1e-12`` so that the rounding of SciPy's
special functions (a few ulps) can never make a bound optimistic.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

_SHAVE = 1e-12


def _check_alpha(alpha: float) -> None:
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper–Pearson lower bound of a binomial proportion.

    ``P[p < bound] <= alpha`` for every true ``p``; 0 when ``k == 0``.
    Equals the lower end of statsmodels' ``proportion_confint(k, n, 2 alpha, method="beta")``
    that Cohen et al.'s code uses.
    """
    _check_alpha(alpha)
    k, n = int(k), int(n)
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if k == 0:
        return 0.0
    if k == n:  # closed form, exact up to rounding: alpha ** (1 / n)
        b = math.exp(math.log(alpha) / n)
    else:
        b = float(special.betaincinv(k, n - k + 1, alpha))
    return max(0.0, b * (1.0 - _SHAVE))


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper–Pearson upper bound; 1 when ``k == n``."""
    return 1.0 - clopper_pearson_lower(int(n) - int(k), n, alpha)


def empirical_bernstein_radius(std: np.ndarray | float, n: int, alpha: float) -> np.ndarray:
    """Half-width of Maurer & Pontil's (2009, Thm. 4) one-sided bound for [0, 1] variables.

    With probability >= 1 - alpha, ``E[X] <= mean + w`` (and, applied to 1 - X,
    ``E[X] >= mean - w``) where ``w = std sqrt(2 ln(2/alpha) / n) + 7 ln(2/alpha) / (3 (n - 1))``
    and ``std`` is the square root of the unbiased sample variance. Needs ``n >= 2``
    (returns ``inf`` otherwise).
    """
    _check_alpha(alpha)
    std = np.asarray(std, dtype=np.float64)
    if n < 2:
        return np.full_like(std, np.inf)
    log_term = math.log(2.0 / alpha)
    w = std * math.sqrt(2.0 * log_term / n) + 7.0 * log_term / (3.0 * (n - 1))
    return w * (1.0 + _SHAVE)


def empirical_bernstein_bounds(
    mean: np.ndarray, std: np.ndarray, n: int, alpha: float, slack: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) Maurer–Pontil bounds, each one-sided at level ``alpha``, clipped to [0, 1].

    ``slack``: a bound on the error of ``mean`` (e.g. fixed-point rounding), added outward."""
    w = empirical_bernstein_radius(std, n, alpha) + slack
    mean = np.asarray(mean, dtype=np.float64)
    return np.clip(mean - w, 0.0, 1.0), np.clip(mean + w, 0.0, 1.0)


def binomial_pvalue(k: int, n: int) -> float:
    """Two-sided exact binomial test p-value of ``k`` successes in ``n`` trials against 1/2.

    Uses ``scipy.stats.binomtest`` (``binom_test``, which Cohen et al.'s PREDICT calls, was
    removed in SciPy 1.12).
    """
    # deferred: heavy optional dependency (scipy.stats adds ~1 s to every worker start)
    from scipy import stats

    if n == 0:
        return 1.0
    return float(stats.binomtest(int(k), int(n), 0.5, alternative="two-sided").pvalue)


def norm_ppf(p: float | np.ndarray) -> float | np.ndarray:
    """Standard normal quantile Phi^-1 (``-inf`` at 0, ``inf`` at 1)."""
    return special.ndtri(p)
