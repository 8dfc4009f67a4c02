r"""Value-dependent radius of a smoothed classifier whose base outputs are L-Lipschitz.

Setting. ``h: R^d -> [0, 1]`` is L-Lipschitz in l2 and ``H(x) = E h(x + Z)``,
``Z ~ N(0, sigma^2 I)``. Conditioning on the component of ``Z`` along a unit direction ``u``
reduces ``u . grad H(x)`` to a one-dimensional problem over L-Lipschitz ``[0, 1]``-valued
functions of that component (the conditional mean of an L-Lipschitz function is L-Lipschitz),
and among those with a given mean ``p`` the derivative is largest for the ramp
``h(s) = clip(L (s - s0), 0, 1)``. Hence

    ||grad H(x)|| <= G_L(H(x)),   G_L(p) = L [Phi_sigma(s0 + 1/L) - Phi_sigma(s0)],
    p = 1 - L int_{s0}^{s0 + 1/L} Phi_sigma(s) ds,

and ``psi(p) = int_{1/2}^{p} dq / G_L(q)`` satisfies ``|psi(H(x)) - psi(H(x'))| <= ||x - x'||``.
A class whose smoothed score stays above 1/2 is the prediction, so ``R = psi(p_A)`` is a
certified radius for a lower bound ``p_A`` of ``H_A(x)``; with upper bounds ``p_B`` of the other
classes, ``(psi(p_A) - psi(p_B)) / 2`` is one too (LVM-style margin).

Closed form of the integral. Substituting ``q = p(s0)`` gives ``dq / G_L(q) = -ds0``, so with the
ramp centre ``c = s0 + 1/(2L)`` (the ramp is symmetric about ``c``, so ``p = 1/2`` at ``c = 0``)

    psi(p) = -c(p),   where   p = mean of (1 - Phi_sigma) over [c - 1/(2L), c + 1/(2L)].

We work in units of sigma: ``ell = L sigma``, ``w = 1 / ell`` is the ramp width and
``p(c) = (1/w) int_{c - w/2}^{c + w/2} (1 - Phi(v)) dv``, evaluated through the antiderivative
``F(v) = v Phi(v) + phi(v)`` of ``Phi``. The computed ``psi`` is rigorous in the direction that is
asked for: bisection on ``c`` keeps the endpoint whose value ``p(c)`` is known (with a
conservative float64 error bound) to lie on the safe side of the target, because ``p(c)`` is
decreasing (Newton's method finds the root, a relative step of 1e-12 (up to 1e-6 if needed)
moves it to the safe side and
the error-bounded evaluation checks it; bisection takes over where the check fails). Two
analytic facts give the bracket and a fallback:

    sigma Phi^-1(p) - 1/(2L) <= psi(p) <= sigma Phi^-1(p) + 1/(2L),
    psi(p) >= sigma Phi^-1(p) for p >= 1/2 (Cohen's radius; equality in the limit L -> inf).

The first pair follows from ``1 - Phi`` being decreasing (the mean over the window lies between
its end values), the second from ``G_L <= G_inf = phi(Phi^-1(p)) / sigma``.
"""

from __future__ import annotations

import numpy as np
from scipy import special

_EPS = np.finfo(np.float64).eps
_SHAVE = 1e-12
_ITERS = 80
_NEWTON = 30
_OUTWARD = (1e-12, 1e-10, 1e-8, 1e-6)  # relative steps to the safe side after Newton
_ELL_MAX = 1e4  # beyond this (L sigma > 1e4) the analytic bracket [Cohen -/+ 1/(2L)] is used


def _F(v: np.ndarray) -> np.ndarray:
    """Antiderivative of Phi: F(v) = v Phi(v) + phi(v)."""
    return v * special.ndtr(v) + np.exp(-0.5 * v * v) / np.sqrt(2.0 * np.pi)


def ramp_mean(c: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``p(c)`` (mean of ``1 - Phi`` over ``[c - w/2, c + w/2]``) and a bound on its float error.

    For ``c < 0`` (p near 1) it computes ``1 - p = (F(b) - F(a)) / w`` from small numbers,
    otherwise ``p = (F(-a) - F(-b)) / w``.
    """
    c = np.asarray(c, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    a, b = c - w / 2, c + w / 2
    left = c < 0
    u1 = np.where(left, b, -a)
    u2 = np.where(left, a, -b)
    with np.errstate(invalid="ignore", over="ignore"):
        f1, f2 = _F(u1), _F(u2)
        q = (f1 - f2) / w
        p = np.where(left, 1.0 - q, q)
        # rounding of F's terms, of the window's end points (integrand <= 1) and of the result
        err = 64 * _EPS * ((np.abs(f1) + np.abs(f2)) / w + 1.0) + 8 * _EPS * (
            np.abs(a) + np.abs(b)
        ) / w
    return np.minimum(np.maximum(p, 0.0), 1.0), err


def _cohen_psi(p: np.ndarray) -> np.ndarray:
    return special.ndtri(p)


def _bisect(p: np.ndarray, w: np.ndarray, lower: bool, lo=None, hi=None) -> np.ndarray:
    """Return centres ``c`` with ``c >= c_true`` (``lower=True``) or ``c <= c_true``."""
    base = -_cohen_psi(p)
    lo = base - w / 2 if lo is None else lo  # p(lo) >= p analytically
    hi = base + w / 2 if hi is None else hi  # p(hi) <= p analytically
    for _ in range(_ITERS):
        mid = 0.5 * (lo + hi)
        val, err = ramp_mean(mid, w)
        if lower:  # move hi down only where p(mid) <= target certainly
            safe = val + err <= p
            hi = np.where(safe, mid, hi)
            lo = np.where(safe, lo, mid)
        else:  # move lo up only where p(mid) >= target certainly
            safe = val - err >= p
            lo = np.where(safe, mid, lo)
            hi = np.where(safe, hi, mid)
    return hi if lower else lo


def _solve(p: np.ndarray, w: np.ndarray, lower: bool) -> np.ndarray:
    """Like ``_bisect`` but fast: Newton steps from Cohen's value, a small outward step, and a
    check of the safe side (bisection for the entries whose check fails)."""
    base = -_cohen_psi(p)
    lo, hi = base - w / 2, base + w / 2
    c = base
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(_NEWTON):
            val, _ = ramp_mean(c, w)
            slope = (special.ndtr(c + w / 2) - special.ndtr(c - w / 2)) / w
            step = (val - p) / slope
            step = np.where(np.isfinite(step), step, 0.0)
            c = np.minimum(np.maximum(c + step, lo), hi)
            if np.all(np.abs(step) <= 1e-13 * (1.0 + np.abs(c))):  # float noise ~1e-14
                break
    out = np.full_like(c, np.nan)
    todo = np.ones(c.shape, dtype=bool)
    for rel in _OUTWARD:  # smallest safe step first
        delta = rel * (1.0 + np.abs(c))
        cand = np.minimum(c + delta, hi) if lower else np.maximum(c - delta, lo)
        val, err = ramp_mean(cand, w)
        ok = todo & ((val + err <= p) if lower else (val - err >= p))
        out[ok] = cand[ok]
        todo &= ~ok
        if not todo.any():
            return out
    out[todo] = _bisect(p[todo], w[todo], lower)
    return out


def psi(
    p: np.ndarray | float, lipschitz: np.ndarray | float, sigma: float, *, lower: bool = True
) -> np.ndarray:
    """A rigorous lower (``lower=True``) or upper bound of ``psi_L(p) = int_{1/2}^p dq / G_L(q)``.

    ``lipschitz`` is the l2 Lipschitz constant L of the base output (``inf`` gives Cohen's
    ``sigma Phi^-1(p)``). Vectorised over ``p`` and ``lipschitz``. ``p <= 0`` gives ``-inf`` and
    ``p >= 1`` gives ``inf``.
    """
    p, lip = np.broadcast_arrays(
        np.asarray(p, dtype=np.float64), np.asarray(lipschitz, dtype=np.float64)
    )
    if np.any(lip <= 0) or np.any(np.isnan(lip)):
        raise ValueError("the Lipschitz constant must be positive")
    if sigma <= 0:
        raise ValueError("sigma must be positive")
    p = np.clip(p, 0.0, 1.0)
    ell = lip * sigma
    cohen = _cohen_psi(p)
    out = np.array(cohen, dtype=np.float64, copy=True)
    finite = (p > 0) & (p < 1)
    with np.errstate(divide="ignore"):
        w = np.where(np.isfinite(ell), 1.0 / ell, 0.0)
    direct = finite & (ell <= _ELL_MAX)
    if np.any(direct):
        c = _solve(p[direct], w[direct], lower)
        out[direct] = -c
    wide = finite & (ell > _ELL_MAX)
    # analytic bracket: cohen -/+ w/2
    out[wide] = cohen[wide] - (w[wide] / 2 if lower else -w[wide] / 2)
    # Cohen's value bounds psi on the safe side where the sign of p - 1/2 allows it
    if lower:
        out = np.where(finite & (p >= 0.5), np.maximum(out, cohen), out)
        out[finite] -= np.abs(out[finite]) * _SHAVE
    else:
        out = np.where(finite & (p <= 0.5), np.minimum(out, cohen), out)
        out[finite] += np.abs(out[finite]) * _SHAVE
    return sigma * out


def lipschitz_radius(p_a: float, lipschitz: float, sigma: float) -> float:
    """Certified radius ``int_{1/2}^{p_A} dq / G_L(q)``, rounded down.

    Negative when ``p_a < 1/2`` (then there is no certificate).
    """
    return float(psi(p_a, lipschitz, sigma, lower=True))


def ramp_center(p: np.ndarray | float, lipschitz: float, sigma: float) -> np.ndarray:
    """Centre ``s0 + 1/(2L)`` (in input units) of the worst-case ramp with smoothed value ``p``."""
    lo = -psi(p, lipschitz, sigma, lower=False)
    hi = -psi(p, lipschitz, sigma, lower=True)
    return 0.5 * (lo + hi)


def gradient_bound(p: np.ndarray | float, lipschitz: float, sigma: float) -> np.ndarray:
    """``G_L(p)``: the largest ``||grad H||`` of a smoothed L-Lipschitz [0, 1] function at
    value p."""
    c = ramp_center(p, lipschitz, sigma) / sigma
    if np.isinf(lipschitz):
        return np.exp(-0.5 * c * c) / np.sqrt(2 * np.pi) / sigma
    w = 1.0 / (lipschitz * sigma)
    return lipschitz * (special.ndtr(c + w / 2) - special.ndtr(c - w / 2))


def smoothed_ramp(x: np.ndarray | float, lipschitz: float, sigma: float) -> np.ndarray:
    """``H(x) = E clip(L (x + Z) + 1/2, 0, 1)`` in closed form (the ramp centred at 0)."""
    c = -np.asarray(x, dtype=np.float64) / sigma
    return ramp_mean(c, np.full_like(c, 1.0 / (lipschitz * sigma)))[0]
