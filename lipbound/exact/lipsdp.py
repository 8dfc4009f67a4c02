"""Global l2 Lipschitz bound by LipSDP-Neuron (Fazlyab et al., 2019), certified in float64.

For f(x) = W_L h_{L-1} + b_L, h_i = act_i(W_i h_{i-1} + b_i) with every activation slope-restricted
in [alpha_i, beta_i] (LeakyReLU(k): [min(k, 1), max(k, 1)]; ReLU: [0, 1]), stack
v = [x; h_1; ...; h_{L-1}] and write z = A v (all pre-activations), h = B v.  For every pair of
inputs the increments satisfy, neuron by neuron, (dh - alpha dz)(beta dz - dh) >= 0, so for diagonal
T >= 0

    Q(T) = [A; B]^T [[-2 alpha beta T, (alpha + beta) T], [(alpha + beta) T, -2 T]] [A; B]

has dv^T Q(T) dv >= 0.  If M(rho, T) = Q(T) + diag(-rho I, 0, ..., 0, W_L^T W_L) is negative
semidefinite then ||f(x) - f(y)||_2 <= sqrt(rho) ||x - y||_2.  (With a spec row c, W_L^T W_L becomes
W_L^T c c^T W_L and the bound is for c . f.)  The SDP "minimise rho subject to M(rho, T) <= 0,
T >= 0 diagonal" is solved by SCS through cvxpy on weights rescaled by powers of two (exact in
floating point) so that every layer has spectral norm about 1.

Certification: SCS's (rho, T) is only approximately feasible.  For the returned T (clipped to
T >= 0) and any rho, with lam an upper bound on lambda_max(M(rho, T)) of the *exact* real matrix
built from the float64 weights and T,

    ||df||^2 <= rho ||dx||^2 + max(lam, 0) ||dv||^2 <= (rho + max(lam, 0) C) ||dx||^2,

C = 1 + sum_i K_i^2 with K_i the naive Lipschitz bound of x -> h_i (products of Gram-iteration
bounds, :func:`lipbound.jacobian.spectral.gram_upper`, rounded up).  ``certified`` is the square
root of that value at the best rho found by a golden-section search on float64 eigenvalues; only
the final rho is certified, rigorously: lam comes from
:func:`lipbound.jacobian.psd.lambda_max_upper` (a Cholesky proof of ``lam I - M >= 0``, Demmel's
bound), with the rounding of forming M bounded elementwise by ``gamma_{k} |A|^T |T| |A|``-type
absolute products (k = dim + K + 8 covers every product and sum of an entry) and passed on in
Frobenius norm.  It is sound whatever SCS returned; the naive product is rigorous too.
"""

from __future__ import annotations

import math
import time

import cvxpy as cp
import numpy as np
import torch

from lipbound.errors import SolverError
from lipbound.exact.mlp import as_mlp
from lipbound.exact.result import LipSDPResult
from lipbound.jacobian.psd import lambda_max_upper
from lipbound.jacobian.spectral import frobenius_upper, gamma_up, gram_upper, up

_EPS = np.finfo(np.float64).eps


def _spec_norm_upper(w: np.ndarray) -> float:
    """A certified upper bound on ||w||_2 (Gram iteration, rounding included)."""
    if w.size == 0:
        return 0.0
    return gram_upper(torch.from_numpy(np.array(w, dtype=np.float64)))


def _pow2_scale(w: np.ndarray) -> float:
    nrm = float(np.linalg.norm(w, 2)) if w.size else 0.0
    if nrm == 0.0 or not math.isfinite(nrm):
        return 1.0
    return float(2.0 ** round(math.log2(nrm)))


def _slopes(k: float) -> tuple[float, float]:
    return min(k, 1.0), max(k, 1.0)


def _structure(weights, slopes):
    """A, B (as dense matrices) for the hidden layers, and per-neuron alpha, beta."""
    n0 = weights[0].shape[1]
    hid = [w.shape[0] for w in weights[:-1]]
    N = sum(hid)
    dim = n0 + N
    A = np.zeros((N, dim))
    B = np.zeros((N, dim))
    al = np.zeros(N)
    be = np.zeros(N)
    row, col_prev, width_prev = 0, 0, n0
    for i, n in enumerate(hid):
        A[row:row + n, col_prev:col_prev + width_prev] = weights[i]
        B[row:row + n, n0 + row:n0 + row + n] = np.eye(n)
        al[row:row + n], be[row:row + n] = _slopes(slopes[i])
        col_prev, width_prev = n0 + row, n
        row += n
    return A, B, al, be, n0, dim


def lipsdp_neuron(mlp, c=None, *, eps: float = 1e-6, max_iters: int = 200_000,
                  verbose: bool = False) -> LipSDPResult:
    """Global l2 Lipschitz constant bound of x -> f(x) (or of c . f if the spec row c is given).

    Returns the SDP's value, the certified value (sound, see the module docstring), and the naive
    product of spectral norms.  ``eps`` is SCS' tolerance.
    """
    t0 = time.perf_counter()
    mlp = as_mlp(mlp)
    ws = list(mlp.weights)
    row_err = 0.0  # ||c^T W_L (exact) - the computed row||_2
    if c is not None:
        cvec = mlp.spec_row(c)
        row_err = frobenius_upper(torch.from_numpy(
            gamma_up(len(cvec) + 2) * (np.abs(cvec) @ np.abs(ws[-1]))))
        ws[-1] = (cvec @ ws[-1])[None, :]
    slopes = mlp.negative_slopes
    smax = [max(abs(a), abs(b)) for a, b in map(_slopes, slopes)]
    k_hidden = 1.0  # naive bound of x -> h_{L-1}: the row error's effect is row_err k_hidden
    for i, w in enumerate(ws[:-1]):
        k_hidden = up(k_hidden * up(_spec_norm_upper(w) * smax[i]))
    row_slack = up(row_err * k_hidden)
    # naive bound: prod ||W_i|| * prod max slope
    naive = 1.0
    for i, w in enumerate(ws):
        naive = up(naive * up(_spec_norm_upper(w) * (smax[i] if i < len(smax) else 1.0)))
    naive = up(naive + row_slack)
    if mlp.num_hidden_layers == 0:  # a linear map: the spectral norm is the answer
        val = up(_spec_norm_upper(ws[0]) + row_slack)
        return LipSDPResult(val, val, float(np.linalg.norm(ws[0], 2)), naive,
                            time.perf_counter() - t0, "exact (linear model)")

    scales = [_pow2_scale(w) for w in ws]
    wn = [w / s for w, s in zip(ws, scales)]  # exact: division by powers of two
    total_scale = float(np.prod(scales))
    A, B, al, be, n0, dim = _structure(wn, slopes)
    N = A.shape[0]
    wl = wn[-1]
    last = wl.T @ wl
    nl = wl.shape[1]

    # ------------------------------------------------------------------ SDP
    t = cp.Variable(N, nonneg=True)
    rho = cp.Variable(nonneg=True)
    ab = al * be
    apb = al + be
    TA = cp.multiply(cp.reshape(cp.multiply(ab, t), (N, 1), order="F"), A)
    TB_A = cp.multiply(cp.reshape(cp.multiply(apb, t), (N, 1), order="F"), A)
    Qm = -2 * (A.T @ TA) + B.T @ TB_A + TB_A.T @ B - 2 * (B.T @ cp.diag(t) @ B)
    E = np.zeros((dim, dim))
    E[:n0, :n0] = np.eye(n0)
    Lst = np.zeros((dim, dim))
    Lst[dim - nl:, dim - nl:] = last
    Mexpr = Qm + Lst - rho * E
    Msym = (Mexpr + Mexpr.T) / 2
    prob = cp.Problem(cp.Minimize(rho), [Msym << 0])
    t_sdp = time.perf_counter()
    try:
        prob.solve(solver=cp.SCS, eps_abs=eps, eps_rel=eps, max_iters=max_iters, verbose=verbose)
    except cp.error.SolverError as e:
        raise SolverError(f"SCS failed on LipSDP: {e}") from e
    sdp_seconds = time.perf_counter() - t_sdp
    if t.value is None or rho.value is None:
        return LipSDPResult(naive, math.inf, math.nan, naive, time.perf_counter() - t0,
                            f"solver status {prob.status}", details={"sdp_time": sdp_seconds})
    tv = np.maximum(np.asarray(t.value, dtype=np.float64), 0.0)
    rho_sdp = float(rho.value)

    # ------------------------------------------------------------------ certification
    cert_rho, info = certify_multipliers(wn, slopes, tv, rho_sdp)
    certified = up(up(up(math.sqrt(cert_rho)) * total_scale) + row_slack)
    sdp_value = math.sqrt(max(rho_sdp, 0.0)) * total_scale
    return LipSDPResult(
        value=min(certified, naive),
        certified=certified,
        sdp_value=sdp_value,
        naive=naive,
        solve_time=time.perf_counter() - t0,
        status=str(prob.status),
        multipliers=tuple(np.split(tv, np.cumsum(mlp.hidden_sizes)[:-1])),
        details={"sdp_time": sdp_seconds, "scale": total_scale, **info},
    )


def _lmi_matrix(weights, slopes, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The computed N = Q(T) + diag(0, ..., W_L^T W_L) (symmetrised) and an elementwise bound
    of |N_computed - N_exact| (module docstring); also n0 and the dimension."""
    A, B, al, be, n0, dim = _structure(weights, slopes)
    wl = weights[-1]
    nl = wl.shape[1]
    ab = al * be
    apb = al + be
    AtT = A.T * (ab * t)
    BtT = B.T * (apb * t)
    N_ = -2 * AtT @ A + BtT @ A + A.T @ BtT.T - 2 * (B.T * t) @ B
    N_[dim - nl:, dim - nl:] += wl.T @ wl
    N_ = (N_ + N_.T) / 2
    absA = np.abs(A)
    P = (np.abs(B).T * (np.abs(apb) * t)) @ absA
    Nabs = (2 * absA.T * (np.abs(ab) * t)) @ absA + P + P.T + 2 * (np.abs(B).T * t) @ np.abs(B)
    Nabs[dim - nl:, dim - nl:] += np.abs(wl).T @ np.abs(wl)
    g = gamma_up(dim + wl.shape[0] + 8)
    err = 2 * g * Nabs + 2 * _EPS * np.abs(N_)
    return N_, err, n0, dim


def certify_multipliers(weights, slopes, t: np.ndarray, rho_hint: float | None = None):
    """Smallest provable rho (see module docstring) for multipliers t >= 0 of the network with
    the given weights (the last one possibly a spec row).  Returns (rho, info): ``rho`` is
    certified (rigorous eigenvalue bound at the chosen point); the search itself uses plain
    float64 eigenvalues."""
    t = np.maximum(np.asarray(t, dtype=np.float64), 0.0)
    N_, err_elem, n0, dim = _lmi_matrix(weights, slopes, t)
    base_err = frobenius_upper(torch.from_numpy(err_elem))
    # C = 1 + sum_i K_i^2, K_i = naive Lipschitz bound of x -> h_i (rounded up)
    C = 1.0
    K = 1.0
    for i in range(len(weights) - 1):
        a_, b_ = _slopes(slopes[i])
        K = up(K * up(_spec_norm_upper(weights[i]) * max(abs(a_), abs(b_))))
        C = up(C + up(K * K))
    E_idx = np.arange(n0)

    def g(rho: float) -> float:  # the search's (uncertified) objective
        M = N_.copy()
        M[E_idx, E_idx] -= rho
        lam = float(np.linalg.eigvalsh(M)[-1])
        return rho + C * max(lam + base_err, 0.0)

    evals: dict[float, float] = {}

    def G(rho: float) -> float:
        if rho not in evals:
            evals[rho] = g(rho)
        return evals[rho]

    hi = 4.0 * max(rho_hint if rho_hint and math.isfinite(rho_hint) else 0.0, 1.0)
    # make sure the bracket's right end is past the minimum (g grows linearly beyond it)
    while G(hi) > G(hi / 2) + 1e-15 and hi < 1e12:
        hi *= 4
    invphi = (math.sqrt(5) - 1) / 2
    a, b = 0.0, hi
    x1, x2 = b - invphi * (b - a), a + invphi * (b - a)
    for _ in range(200):
        if G(x1) <= G(x2):
            b, x2 = x2, x1
            x1 = b - invphi * (b - a)
        else:
            a, x1 = x1, x2
            x2 = a + invphi * (b - a)
        if b - a <= 1e-13 * max(1.0, b):
            break
    if rho_hint is not None and math.isfinite(rho_hint) and rho_hint >= 0:
        G(rho_hint)
        G(rho_hint * (1 + 1e-7))
    best_rho = min(evals, key=evals.get)
    # ---- the rigorous evaluation at the chosen rho
    M = N_.copy()
    M[E_idx, E_idx] -= best_rho
    err = up(base_err + up(2 * _EPS * float(np.abs(np.diag(M)).max())))
    lam_up = lambda_max_upper(M, err)
    cert = up(best_rho + up(C * max(lam_up, 0.0)))
    return cert, {"certified_rho_at": best_rho, "C": C, "eig_err": err, "lambda_max_upper":
                  lam_up, "evaluations": len(evals)}
