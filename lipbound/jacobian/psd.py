"""Rigorous positive-semidefiniteness and largest-eigenvalue certificates in float64.

Every certified l_2 bound that rests on a matrix inequality (LipSDP, ECLipsE) must prove
``A >= 0`` for an *exact real* matrix A of which only a float64 approximation ``a`` is at hand,
with ``||A - a||_2 <= err`` known. No eigensolver is trusted; the proof is a Cholesky
factorisation run in float64 (Rump, "Verification of positive definiteness", BIT 2006):

* Demmel's bound (Higham, *Accuracy and Stability of Numerical Algorithms*, Thm 10.3): if the
  standard Cholesky algorithm, run in floating point on a symmetric n x n float matrix H,
  completes with every pivot positive, the computed factor R satisfies
  ``R^T R = H + dH`` with ``|dH| <= gamma_{n+1} |R^T| |R|`` elementwise, whatever the order in
  which each inner product is accumulated. Hence ``||dH||_2 <= gamma_{n+1} || |R| ||_2^2 <=
  gamma_{n+1} ||R||_F^2`` and ``H >= -gamma_{n+1} ||R||_F^2 I``.
* :func:`certify_psd` rescales by a diagonal of powers of two ``S`` (exact) so that the
  diagonal is about 1, factors ``H = fl(S a S - c I)`` with our own partitioned
  right-looking loop (:func:`cholesky_upper`: each entry is ``h_ij`` minus its inner product,
  accumulated in some order (blocks by conventional matrix products), then one rounded
  division or square root; no reciprocals, so it *is* the standard algorithm) and accepts
  iff

      c >= ||S||_2^2 err + gamma_{n+1} ||R||_F^2 + 2u max_j |H_jj| + n (n + 2) 2^-1074 m^2,

  where the third term covers the rounding of the diagonal shift and the last the absolute
  error of underflowing operations (m = max(1, max |R_ij|)). Then
  ``S A S = H + (S a S - c I - H) + c I + S (A - a) S >= (c - [the right-hand side]) I >= 0``.
* :func:`lambda_max_upper` turns this into an upper bound on ``lambda_max(A)``: it proves
  ``t I - A >= 0`` for a t slightly above the computed eigenvalue (the rounding of forming
  ``t I - a`` is added to ``err``).

The shift c is chosen before the factorisation (about 4 gamma_{n+1} (trace + 1)); the check
afterwards is what makes the answer sound.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lipbound.jacobian.spectral import frobenius_upper, gamma_up, up

_U = 2.0 ** -53
_TINY = 5e-324


def cholesky_upper(h: np.ndarray, block: int = 64) -> np.ndarray | None:
    """Upper triangular R with R^T R ~ h by the standard right-looking algorithm in float64
    (partitioned: the pivot rows of a block are updated column by column, the trailing
    matrix once per block with one matrix product; every entry is still ``a_ij`` minus the
    sum of its products ``r_ki r_kj``, accumulated in some order, divided by ``r_ii`` or
    square-rooted, which is all Demmel's bound assumes), or None when a pivot is not
    positive."""
    a = np.array(h, dtype=np.float64, copy=True)
    n = a.shape[0]
    r = np.zeros_like(a)
    for k0 in range(0, n, block):
        k1 = min(k0 + block, n)
        for k in range(k0, k1):
            piv = a[k, k]
            if not piv > 0.0:
                return None
            rkk = math.sqrt(piv)
            r[k, k] = rkk
            row = a[k, k + 1:] / rkk
            r[k, k + 1:] = row
            a[k + 1:k1, k + 1:] -= np.outer(row[:k1 - k - 1], row)
        panel = r[k0:k1, k1:]
        a[k1:, k1:] -= panel.T @ panel
    return r


def _pow2_diag_scale(d: np.ndarray) -> np.ndarray:
    """Powers of two s_j with s_j^2 d_j in [1/2, 2) (d_j > 0)."""
    e = np.frexp(d)[1]  # d = m 2^e, m in [1/2, 1)
    return np.ldexp(1.0, -(e // 2))


def certify_psd(a: np.ndarray, err: float = 0.0) -> bool:
    """True only if every symmetric real A with ``||A - a||_2 <= err`` is positive
    semidefinite (module docstring); False does not prove the contrary."""
    a = np.asarray(a, dtype=np.float64)
    n = a.shape[0]
    if n == 0:
        return True
    if not np.isfinite(a).all() or not math.isfinite(err) or not np.array_equal(a, a.T):
        return False
    d = np.diag(a).copy()
    if not (d > 0).all():
        return False
    s = _pow2_diag_scale(d)
    h = a * s[:, None] * s[None, :]  # exact unless it underflows (covered below)
    err_s = up(err * up(float(s.max()) ** 2) * (1 + 4 * _U))
    g = gamma_up(n + 1)
    tr = float(np.trace(h))
    c = up(2.0 * err_s + 4.0 * g * (tr + 1.0) + 8.0 * _U * float(np.abs(np.diag(h)).max()))
    h[np.diag_indices(n)] -= c
    r = cholesky_upper(h)
    if r is None:
        return False
    fro = frobenius_upper(torch.from_numpy(r))
    m = max(1.0, float(np.abs(r).max()))
    need = up(err_s + up(g * up(fro * fro)))
    need = up(need + up(2 * _U * float(np.abs(np.diag(h)).max()) * (1 + 4 * _U)))
    need = up(need + up(n * (n + 2) * _TINY * up(m * m)) + n * _TINY)
    return c >= need


def lambda_max_upper(a: np.ndarray, err: float = 0.0, rtol: float = 1e-9) -> float:
    """A certified upper bound on the largest eigenvalue of every symmetric real A with
    ``||A - a||_2 <= err`` (``a`` symmetric float64); ``inf`` if no proof succeeds."""
    a = np.asarray(a, dtype=np.float64)
    n = a.shape[0]
    if n == 0:
        return -math.inf
    if not np.isfinite(a).all():
        return math.inf
    lam = float(np.linalg.eigvalsh(a)[-1])
    scale = max(float(np.abs(a).max()), 1e-300)
    margin = rtol * scale + err
    for _ in range(12):
        t = up(lam + margin)
        h = -a
        h[np.diag_indices(n)] += t
        # forming t - a_jj rounds once: |error| <= u |h_jj| (1 + u)
        e = up(err + up(2 * _U * float(np.abs(np.diag(h)).max())))
        if certify_psd(h, e):
            return t
        margin *= 8.0
    return math.inf


__all__ = ["certify_psd", "cholesky_upper", "lambda_max_upper"]
