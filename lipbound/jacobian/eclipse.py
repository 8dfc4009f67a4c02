"""Certified global l_2 Lipschitz bounds by ECLipsE-Fast (Xu & Sivaranjani, NeurIPS 2024).

For a chain ``h_0 = x``, ``h_i = act_i(W_i h_{i-1} + b_i)`` (i < L), ``f = W_L h_{L-1} + b_L``
with every activation slope-restricted in ``[0, beta_i]`` (:mod:`lipbound.jacobian.chain`),
write ``u = dh_{i-1}``, ``y = dh_i`` for the increments between two inputs. Neuron by neuron,
``y_j (beta_i (W_i u)_j - y_j) >= 0`` (y_j and the pre-activation increment share their sign
and ``|y_j| <= beta_i |(W_i u)_j|``).

**Invariant.** ``||dx||^2 >= dh_i^T X_i dh_i`` with ``X_0 = I``. Step i: for any kappa >= 0
put ``lam = 2 kappa / beta_i`` and let X_i be any symmetric matrix with

    B_i = [[X_{i-1}, -kappa W_i^T], [-kappa W_i, lam I - X_i]]  >= 0 .

Then ``u^T X_{i-1} u - y^T X_i y >= 2 kappa y^T W_i u - lam y^T y = lam y^T (beta_i W_i u - y)
>= 0``, so the invariant passes from i - 1 to i. **Output.** If ``[[X_{L-1}, w], [w^T, rho]]
>= 0`` (w a row of ``C W_L``), then ``(w^T dh)^2 <= rho dh^T X_{L-1} dh <= rho ||dx||^2``:
the row's Lipschitz constant is at most ``sqrt(rho)``; with ``[[X, W^T], [W, rho I]] >= 0``
the same holds for ``||W dh||_2`` (the vector map).

**ECLipsE-Fast's choice** (the closed form of the paper, with the multiplier scaled by the
slope bound): ``M_i = W_i X_{i-1}^{-1} W_i^T``, ``kappa = 1 / (beta_i lambda_max(M_i))``,
``X_i = lam I - kappa^2 M_i`` (the Schur complement of B_i is then 0; its eigenvalues lie in
``[lam / 2, lam]``, so every X_i is well conditioned), and ``rho = w^T X_{L-1}^{-1} w``. It is
never above the product of spectral norms (``lambda_min(X_i) >= lambda_min(X_{i-1}) /
(beta_i ||W_i||)^2``).

**Float error.** The numbers above are only *choices*; soundness rests on proving each
``B_i >= 0`` and each output block ``>= 0`` for the exact real matrices built from the stored
float64 X_i, kappa and the exact weights, by :func:`lipbound.jacobian.psd.certify_psd`
(Cholesky with Demmel's bound; the rounding of forming the blocks, ``|fl(kappa W) - kappa W|
<= u |fl(kappa W)|``, ``|fl(lam) - 2 kappa / beta| <= u lam``, the rounding of the diagonal,
and the chain's weight error ``err`` are added to the block's error in spectral norm). To
leave room, X_i is lowered by ``delta lam I`` (delta = 1e-9, raised tenfold on a failed
proof); the returned ``sqrt(rho)`` is rounded upward. A layer with ``beta = 0`` or an exactly
zero weight makes the rest of the network constant: every bound is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lipbound.jacobian.chain import ChainLayer
from lipbound.jacobian.psd import certify_psd
from lipbound.jacobian.spectral import frobenius_upper, gamma_up, up

_U = 2.0 ** -53
_DELTAS = (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4)
_ETAS = (1e-9, 1e-7, 1e-5, 1e-3, 1e-1, 1.0)


@dataclass(frozen=True)
class EclipseState:
    """``||dx||^2 >= dh^T x dh`` for the increments dh of the last hidden layer (``x`` None:
    that layer is constant); ``last`` the final layer."""

    x: np.ndarray | None
    last: ChainLayer
    deltas: tuple[float, ...]


def _frob(a: np.ndarray) -> float:
    return frobenius_upper(torch.from_numpy(np.ascontiguousarray(a)))


def _step(x: np.ndarray, layer: ChainLayer) -> tuple[np.ndarray, float] | None:
    """The next certified X (and the delta used), or None when no proof succeeded."""
    w, beta = layer.weight, float(layer.beta)
    mat = w @ np.linalg.solve(x, w.T)
    mat = (mat + mat.T) / 2
    mu = float(np.linalg.eigvalsh(mat)[-1])
    if not (mu > 0) or not math.isfinite(mu):
        return None
    kappa = 1.0 / (beta * mu)
    lam = 2.0 * kappa / beta
    n0, n1 = x.shape[0], w.shape[0]
    off = -kappa * w
    err_off = up(up(2 * _U * _frob(off)) + up(kappa * layer.err * (1 + 4 * _U)))
    base = lam * np.eye(n1) - (kappa * kappa) * mat
    for delta in _DELTAS:
        xn = base - (delta * lam) * np.eye(n1)
        xn = (xn + xn.T) / 2
        b = np.empty((n0 + n1, n0 + n1))
        b[:n0, :n0] = x
        b[n0:, :n0] = off
        b[:n0, n0:] = off.T
        b[n0:, n0:] = -xn
        b[np.arange(n0, n0 + n1), np.arange(n0, n0 + n1)] = lam - np.diag(xn)
        diag_err = up(2 * _U * (lam + float(np.abs(np.diag(b[n0:, n0:])).max())))
        if certify_psd(b, up(err_off + diag_err)):
            return xn, delta
    return None


def eclipse_chain(layers: tuple[ChainLayer, ...]) -> EclipseState | None:
    """Run the certified ECLipsE-Fast recursion over the hidden layers (None: a proof failed,
    no bound)."""
    x: np.ndarray | None = np.eye(layers[0].weight.shape[1])
    deltas = []
    for layer in layers[:-1]:
        if layer.beta == 0 or (layer.err == 0 and not layer.weight.any()):
            return EclipseState(None, layers[-1], tuple(deltas))
        nxt = _step(x, layer)
        if nxt is None:
            return None
        x, d = nxt
        deltas.append(d)
    return EclipseState(x, layers[-1], tuple(deltas))


def _certify_output(x: np.ndarray, w: np.ndarray, err: float) -> float:
    """Least tried rho with ``[[x, w^T], [w, rho I]] >= 0`` proved for every exact W within
    ``err`` (spectral) of ``w`` [k, n]; its square root, rounded up (inf if none)."""
    k, n = w.shape
    if err == 0 and not w.any():
        return 0.0
    sol = np.linalg.solve(x, w.T)
    rho0 = max(float(np.linalg.eigvalsh((w @ sol + (w @ sol).T) / 2)[-1]), 0.0)
    xinv = 1.0 / max(float(np.linalg.eigvalsh(x)[0]), 1e-300)
    root = math.sqrt(rho0) + 2.0 * err * math.sqrt(xinv)
    for eta in _ETAS:
        rho = up(root * root * (1 + eta) + 1e-300)
        b = np.empty((n + k, n + k))
        b[:n, :n] = x
        b[n:, :n] = w
        b[:n, n:] = w.T
        b[n:, n:] = 0.0
        b[np.arange(n, n + k), np.arange(n, n + k)] = rho
        if certify_psd(b, err):
            return up(math.sqrt(rho))
    return math.inf


def eclipse_rows(state: EclipseState, C: np.ndarray) -> np.ndarray:
    """Certified upper bounds [S] on the l_2 Lipschitz constants of the rows of ``C f``."""
    C = np.asarray(C, dtype=np.float64)
    if state.x is None:
        return np.zeros(C.shape[0])
    w_last = state.last.weight
    rows = C @ w_last
    g = gamma_up(C.shape[1] + 2)
    slack = g * (np.abs(C) @ np.abs(w_last))
    out = np.empty(C.shape[0])
    for s in range(C.shape[0]):
        cn = up(float(np.linalg.norm(C[s])) * (1 + gamma_up(C.shape[1] + 2)))
        e = up(_frob(slack[s]) + up(cn * state.last.err))
        out[s] = _certify_output(state.x, rows[s][None, :], e)
    return out


def eclipse_vector(state: EclipseState) -> float:
    """A certified upper bound on the l_2 -> l_2 Lipschitz constant of the whole output."""
    if state.x is None:
        return 0.0
    return _certify_output(state.x, state.last.weight, state.last.err)


__all__ = ["EclipseState", "eclipse_chain", "eclipse_rows", "eclipse_vector"]
