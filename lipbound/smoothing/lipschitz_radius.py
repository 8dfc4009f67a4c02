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
decreasing. Two analytic facts give the bracket and a fallback:

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
_ELL_MAX = 1e6  # beyond this the bracket [Cohen - 1/(2L), Cohen + 1/(2L)] is used as it is


def _F(v: np.ndarray) -> np.ndarray:
    """Antiderivative of Phi: F(v) = v Phi(v) + phi(v)."""
    return v * special.ndtr(v) + np.exp(-0.5 * v * v) / np.sqrt(2.0 * np.pi)


def ramp_mean(c: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``p(c)`` (mean of ``1 - Phi`` over ``[c - w/2, c + w/2]``) and a bound on its float error."""
    c = np.asarray(c, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    a, b = c - w / 2, c + w / 2
    with np.errstate(invalid="ignore", over="ignore"):
        f_b, f_a = _F(b), _F(a)
        f_ma, f_mb = _F(-a), _F(-b)
        left = c < 0  # p near 1: compute 1 - p from small numbers
        p = np.where(left, 1.0 - (f_b - f_a) / w, (f_ma - f_mb) / w)
        mag = np.where(left, np.abs(f_b) + np.abs(f_a), np.abs(f_ma) + np.abs(f_mb))
        err = 64 * _EPS * (mag / w + 1.0)
    return np.clip(p, 0.0, 1.0), err


def _cohen_psi(p: np.ndarray) -> np.ndarray:
    return special.ndtri(p)


def _bisect(p: np.ndarray, w: np.ndarray, lower: bool) -> np.ndarray:
    """Return centres ``c`` with ``c >= c_true`` (``lower=True``) or ``c <= c_true``."""
    base = -_cohen_psi(p)
    lo = base - w / 2  # p(lo) >= p analytically
    hi = base + w / 2  # p(hi) <= p analytically
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
        c = _bisect(p[direct], w[direct], lower)
        out[direct] = -c
    wide = finite & (ell > _ELL_MAX)
    # analytic bracket: cohen -/+ w/2
    out[wide] = cohen[wide] - (w[wide] / 2 if lower else -w[wide] / 2)
    # Cohen's value bounds psi on the safe side where the sign of p - 1/2 allows it
    if lower:
        out = np.where(finite & (p >= 0.5), np.maximum(out, cohen), out)
        out = out - np.abs(out) * _SHAVE
    else:
        out = np.where(finite & (p <= 0.5), np.minimum(out, cohen), out)
        out = out + np.abs(out) * _SHAVE
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
    """``G_L(p)``: the largest ``||grad H||`` of a smoothed L-Lipschitz [0, 1] function at value p."""
    c = ramp_center(p, lipschitz, sigma) / sigma
    if np.isinf(lipschitz):
        return np.exp(-0.5 * c * c) / np.sqrt(2 * np.pi) / sigma
    w = 1.0 / (lipschitz * sigma)
    return lipschitz * (special.ndtr(c + w / 2) - special.ndtr(c - w / 2))


def smoothed_ramp(x: np.ndarray | float, lipschitz: float, sigma: float) -> np.ndarray:
    """``H(x) = E clip(L (x + Z) + 1/2, 0, 1)`` in closed form (the ramp centred at 0)."""
    c = -np.asarray(x, dtype=np.float64) / sigma
    return ramp_mean(c, np.full_like(c, 1.0 / (lipschitz * sigma)))[0]
