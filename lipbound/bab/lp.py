"""LP feasibility of activation-sign domains of ReLU / LeakyReLU MLPs (HiGHS through highspy).

The LP over (x, a_1, ..., a_{L-1}) encodes, for a box of inputs and per-layer pre-activation
bounds [lo, hi] (already clamped by the split signs), z_i = W_i a_{i-1} + b_i within its
bounds, a_i = z_i (or k z_i) on neurons whose sign is fixed, and the triangle hull of the
activation on the others. Every input of the box whose pre-activations have the domain's signs
(closed: z = 0 allowed on either side) satisfies it, so an infeasible LP proves that no input
produces the domain. Every bound is relaxed outward by ``TOL`` (relative) so that
"infeasible" means infeasible beyond rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import highspy
import numpy as np
from scipy import sparse

from lipbound.highs import new_highs

#: relative outward slack of every bound of the LP
TOL = 1e-8
#: LPs with more variables use HiGHS's interior-point solver
IPM_MIN_VARS = 300


@dataclass(frozen=True)
class MlpLayer:
    """z = W a_prev + b, a = act(z) with negative slope k (None for the output layer)."""

    z: str
    W: np.ndarray
    b: np.ndarray
    k: float | None


@dataclass(frozen=True)
class LpAnswer:
    """status: "feasible" (x is a point of the box), "infeasible" or "undecided" (time limit);
    margin: the smallest signed pre-activation of the split neurons at x (margin LPs only)."""

    status: str
    x: np.ndarray | None = None
    margin: float = 0.0


def _block(nvar: int, prev: slice, own: slice, Wc: np.ndarray, Ac: np.ndarray) -> np.ndarray:
    """Rows Wc a_prev + Ac a_own over all LP variables."""
    R = np.zeros((Wc.shape[0], nvar))
    R[:, prev], R[:, own] = Wc, Ac
    return R


def _layer_rows(L: MlpLayer, lo: np.ndarray, hi: np.ndarray, nvar: int, prev: slice,
                own: slice):
    """(A, lower, upper) rows of one hidden layer: z in [lo, hi] (slack ``TOL``), the fixed
    piece on sign-fixed neurons, the triangle hull on the others."""
    m, k = len(L.b), L.k
    slack = TOL * (1 + np.abs(lo) + np.abs(hi))
    eye, inf = np.eye(m), np.full(m, np.inf)
    pos, neg = lo >= 0, hi <= 0
    opn = ~(pos | neg)
    slope = np.where(opn, (hi - k * lo) / np.where(opn, hi - lo, 1.0), 0.0)
    piece = np.where(pos, 1.0, k)
    parts = [  # (W coefficient, a coefficient, lower, upper, rows used)
        (L.W, 0 * eye, lo - L.b - slack, hi - L.b + slack, np.ones(m, bool)),
        (-piece[:, None] * L.W, eye, piece * L.b - slack, piece * L.b + slack, pos | neg),
        (-slope[:, None] * L.W, eye, -inf, slope * L.b + k * lo - slope * lo + slack, opn),
        (-L.W, eye, L.b - slack, inf, opn),
        (-k * L.W, eye, k * L.b - slack, inf, opn),
    ]
    A = [_block(nvar, prev, own, Wc, Ac)[sel] for Wc, Ac, _, _, sel in parts]
    return (np.vstack(A), np.concatenate([a[sel] for _, _, a, _, sel in parts]),
            np.concatenate([b[sel] for _, _, _, b, sel in parts]))


def _rows(layers, bounds, signs, n0):
    """Constraint rows (A, lower, upper, n_vars) of the LP, variables x then a per hidden
    layer; None when the clamped bounds of some neuron are already empty."""
    widths = [n0] + [len(L.b) for L in layers[:-1]]
    offs = np.cumsum([0] + widths)
    nvar = int(offs[-1])
    out = []
    for i, (L, (lo, hi), sg) in enumerate(zip(layers[:-1], bounds, signs)):
        lo = np.where(sg > 0, np.maximum(lo, 0.0), lo)
        hi = np.where(sg < 0, np.minimum(hi, 0.0), hi)
        if (lo > hi + 1e-9 * (1 + np.abs(lo) + np.abs(hi))).any():
            return None  # crossed by more than rounding: no input has these signs
        out.append(_layer_rows(L, lo, hi, nvar, slice(offs[i], offs[i + 1]),
                               slice(offs[i + 1], offs[i + 2])))
    A, rlo, rhi = zip(*out)
    return np.vstack(A), np.concatenate(rlo), np.concatenate(rhi), nvar


def sign_lp(layers: list[MlpLayer], box_lo: np.ndarray, box_hi: np.ndarray,
            bounds: list[tuple[np.ndarray, np.ndarray]], signs: list[np.ndarray],
            time_limit: float, margin: bool = False,
            aim: tuple[np.ndarray, np.ndarray] | None = None) -> LpAnswer:
    """Decide whether some x in [box_lo, box_hi] can produce ``signs`` (see the module doc).

    With ``margin`` the LP maximises t <= 1 subject to s_j z_j >= t on the split neurons, so a
    positive margin certifies a point strictly inside the domain's region. Otherwise, with
    ``aim = (G [k, K], g [k])`` the feasible point returned minimises max_i (G_i y + g_i) over
    the LP (y = the output layer of the relaxed network): where every neuron's sign is fixed
    the LP is the network itself on the domain's region, so its point attains the minimum of
    that function there (up to ``TOL``); elsewhere it is a candidate. The verdict
    (feasible / infeasible) does not depend on ``aim``: with finite bounds every variable is
    bounded (x by the box, z by its bounds, a by its fixed piece or triangle), so the aimed
    LP is never unbounded and HiGHS's "unbounded or infeasible" still means infeasible.
    """
    n0 = box_lo.size
    built = _rows(layers, bounds, signs, n0)
    if built is None:
        return LpAnswer("infeasible")
    A, rlo, rhi, nvar = built
    tol = TOL * (1 + np.abs(box_lo) + np.abs(box_hi))
    clo = np.concatenate([box_lo - tol, np.full(nvar - n0, -np.inf)])
    chi = np.concatenate([box_hi + tol, np.full(nvar - n0, np.inf)])
    cost = np.zeros(nvar)
    if margin:
        A, rlo, rhi = _margin_rows(layers, signs, A, rlo, rhi, n0)
        clo, chi = np.append(clo, -np.inf), np.append(chi, 1.0)
        cost = np.append(cost, -1.0)
    elif aim is not None:
        A, rlo, rhi = _aim_rows(layers, aim, A, rlo, rhi, n0)
        clo, chi = np.append(clo, -np.inf), np.append(chi, np.inf)
        cost = np.append(cost, 1.0)
    return _solve(A, rlo, rhi, clo, chi, cost, time_limit, n0, margin)


def _aim_rows(layers, aim, A, rlo, rhi, n0):
    """Rows G_i (W_L a_{L-1} + b_L) + g_i - t <= 0 and a column for t (the LP minimises t)."""
    G, g = aim
    out = layers[-1]
    last = n0 + sum(len(L.b) for L in layers[:-1])
    prev = slice(last - out.W.shape[1], last)
    R = np.zeros((G.shape[0], A.shape[1] + 1))
    R[:, prev] = G @ out.W
    R[:, -1] = -1.0
    A = np.vstack([np.hstack([A, np.zeros((A.shape[0], 1))]), R])
    return (A, np.concatenate([rlo, np.full(G.shape[0], -np.inf)]),
            np.concatenate([rhi, -(G @ out.b + g)]))


def _margin_rows(layers, signs, A, rlo, rhi, n0):
    """Rows s_j (W_j a_prev + b_j) - t >= 0 for split neurons, and a column for t."""
    widths = [n0] + [len(L.b) for L in layers[:-1]]
    offs = np.cumsum([0] + widths)
    extra, lo = [], []
    for i, (L, sg) in enumerate(zip(layers[:-1], signs)):
        sel = sg != 0
        R = np.zeros((int(sel.sum()), A.shape[1] + 1))
        R[:, offs[i]:offs[i + 1]] = sg[sel, None] * L.W[sel]
        R[:, -1] = -1.0
        extra.append(R)
        lo.append(-sg[sel] * L.b[sel])
    A = np.vstack([np.hstack([A, np.zeros((A.shape[0], 1))]), *extra])
    return A, np.concatenate([rlo, *lo]), np.concatenate([rhi, np.full(A.shape[0] - len(rhi),
                                                                        np.inf)])


def _solve(A, rlo, rhi, clo, chi, cost, time_limit, n0, margin) -> LpAnswer:
    M = sparse.csc_matrix(A)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = A.shape[1], A.shape[0]
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = cost, clo, chi
    lp.row_lower_, lp.row_upper_ = rlo, rhi
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = M.indptr, M.indices, M.data
    h = new_highs()  # no banner on stdout
    h.setOptionValue("time_limit", max(float(time_limit), 0.01))
    if A.shape[1] > IPM_MIN_VARS:  # dual simplex stalls on these degenerate LPs (MNIST: >10 s
        h.setOptionValue("solver", "ipm")  # undecided vs 0.4 s for the interior-point method)
    h.passModel(lp)
    h.run()
    st = h.getModelStatus()
    S = highspy.HighsModelStatus
    if st in (S.kInfeasible, S.kUnboundedOrInfeasible):
        return LpAnswer("infeasible")
    if st != S.kOptimal:
        return LpAnswer("undecided")
    sol = np.asarray(h.getSolution().col_value)
    return LpAnswer("feasible", sol[:n0], float(sol[-1]) if margin else 0.0)
