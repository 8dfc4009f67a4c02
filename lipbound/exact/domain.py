"""Input sets, interval bounds and linear programs over activation regions.

The input set is B = {x : ||x - x0||_p <= eps} intersected with an optional box data_range
(lo, hi).  Everything here is float64 numpy.

Interval bounds (IBP) are widened outward by a relative 1e-12 so that rounding cannot turn an
unstable neuron into a "stable" one.  A neuron is *stable active* if its lower pre-activation bound
l > 0, *stable inactive* if u < 0 and *unstable* otherwise (l <= 0 <= u, so z = 0 is possible and
both derivative choices are allowed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch
from scipy.optimize import linprog

from lipbound.errors import InputError, ShapeError, SolverError
from lipbound.exact.mlp import MLP, Pattern
from lipbound.norms import dual_norm, parse_norm

ACTIVE, INACTIVE, UNSTABLE = 1, -1, 0
_WIDEN = 1e-12


def vec_norm(v: np.ndarray, q: float) -> float:
    return float(np.linalg.norm(v, ord=q)) if v.size else 0.0


@dataclass(frozen=True, eq=False)
class InputBall:
    """B = {x : ||x - x0||_p <= eps} intersected with the box [lo, hi] (flat float64 arrays;
    lo/hi are -inf/+inf without a data range).  ``box_lo``/``box_hi`` bound B coordinate-wise."""

    x0: np.ndarray
    eps: float
    p: float
    lo: np.ndarray
    hi: np.ndarray
    shape: tuple[int, ...]

    @property
    def n(self) -> int:
        return int(self.x0.size)

    @property
    def box_lo(self) -> np.ndarray:
        return np.maximum(self.x0 - self.eps, self.lo)

    @property
    def box_hi(self) -> np.ndarray:
        return np.minimum(self.x0 + self.eps, self.hi)

    def contains(self, x: np.ndarray, tol: float = 1e-9) -> bool:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        scale = 1.0 + self.eps + float(np.max(np.abs(self.x0), initial=0.0))
        in_ball = vec_norm(x - self.x0, self.p) <= self.eps + tol * scale
        in_box = bool(np.all(x >= self.lo - tol * scale) and np.all(x <= self.hi + tol * scale))
        return bool(in_ball and in_box)

    def pull_inside(self, x: np.ndarray) -> np.ndarray:
        """Move a point that a solver left slightly outside B (by its tolerances) into B:
        clip to the data range, then, if still outside the ball, move it along the segment
        towards clip(x0, lo, hi) (a point of B) just far enough."""
        x = np.clip(np.asarray(x, dtype=np.float64).reshape(-1), self.lo, self.hi)
        if self.p == math.inf:
            return np.clip(x, self.box_lo, self.box_hi)
        if vec_norm(x - self.x0, self.p) <= self.eps:
            return x
        anchor = np.clip(self.x0, self.lo, self.hi)
        lo_t, hi_t = 0.0, 1.0  # invariant: anchor + lo_t (x - anchor) is in B
        for _ in range(60):
            mid = (lo_t + hi_t) / 2
            if vec_norm(anchor + mid * (x - anchor) - self.x0, self.p) <= self.eps:
                lo_t = mid
            else:
                hi_t = mid
        return anchor + lo_t * (x - anchor)


def _range_part(v, x0: torch.Tensor, name: str) -> np.ndarray:
    t = torch.as_tensor(v, dtype=torch.float64)
    try:
        t = torch.broadcast_to(t, x0.shape)
    except RuntimeError:
        raise ShapeError(
            f"data_range {name} of shape {tuple(t.shape)} does not broadcast to the input shape "
            f"{tuple(x0.shape)}"
        ) from None
    a = t.reshape(-1).numpy().copy()
    if np.any(np.isnan(a)):
        raise InputError(f"data_range {name} contains NaN")
    return a


def make_ball(mlp: MLP, x0, eps, p, data_range=None) -> InputBall:
    """Validate the input set and build an InputBall (x0 of any shape with in_features elements)."""
    x0t = torch.as_tensor(x0.detach() if isinstance(x0, torch.Tensor) else x0, dtype=torch.float64)
    if x0t.numel() != mlp.in_features:
        raise ShapeError(
            f"x0 has {x0t.numel()} elements (shape {tuple(x0t.shape)}), the model expects "
            f"{mlp.in_features}"
        )
    x = x0t.reshape(-1).numpy().copy()
    if not np.all(np.isfinite(x)):
        raise InputError("x0 contains NaN or inf")
    try:
        eps_f = float(eps.item() if isinstance(eps, torch.Tensor) else eps)
    except (TypeError, ValueError):
        raise InputError(f"eps must be a number, got {eps!r}") from None
    if not math.isfinite(eps_f) or eps_f < 0:
        raise InputError(f"eps must be finite and >= 0, got {eps_f}")
    pf = parse_norm(p)
    if data_range is None:
        lo = np.full(x.size, -np.inf)
        hi = np.full(x.size, np.inf)
    else:
        try:
            lo_v, hi_v = data_range
        except (TypeError, ValueError):
            raise InputError("data_range must be a pair (lo, hi)") from None
        lo = _range_part(lo_v, x0t, "lo")
        hi = _range_part(hi_v, x0t, "hi")
        if np.any(lo > hi):
            raise InputError("data_range has lo > hi")
    # distance (in the p-norm) from x0 to the box: B is empty iff it exceeds eps
    dist = vec_norm(x - np.clip(x, lo, hi), pf)
    if dist > eps_f * (1 + 1e-12):
        raise InputError(
            f"the ball of radius {eps_f} around x0 does not meet data_range "
            f"(distance {dist:.6g}): the input set is empty"
        )
    return InputBall(x, eps_f, pf, lo, hi, tuple(x0t.shape))


# ---------------------------------------------------------------------- interval bounds
def _widen(lo: np.ndarray, hi: np.ndarray, mag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pad = _WIDEN * mag + 1e-300
    return lo - pad, hi + pad


def _affine_interval(w, b, lo, hi):
    mid = (lo + hi) / 2
    rad = (hi - lo) / 2
    aw = np.abs(w)
    c = w @ mid + b
    r = aw @ rad
    return _widen(c - r, c + r, aw @ np.abs(mid) + r + np.abs(b))


def first_layer_bounds(ball: InputBall, w: np.ndarray, b: np.ndarray):
    """Bounds of W x + b over B: the box estimate intersected with the exact ball estimate."""
    lo, hi = _affine_interval(w, b, ball.box_lo, ball.box_hi)
    if ball.p != math.inf:
        q = dual_norm(ball.p)
        c = w @ ball.x0 + b
        r = ball.eps * np.linalg.norm(w, ord=q, axis=1)
        l2, u2 = _widen(c - r, c + r, np.abs(w) @ np.abs(ball.x0) + r + np.abs(b))
        lo, hi = np.maximum(lo, l2), np.minimum(hi, u2)
    return lo, hi


def _act_interval(lo, hi, k):
    # LeakyReLU with k >= 0 is monotone non-decreasing
    f = lambda z: np.where(z > 0, z, k * z)  # noqa: E731
    return f(lo), f(hi)


def validate_preact_bounds(mlp: MLP, preact_bounds) -> list[tuple[np.ndarray, np.ndarray]]:
    """Check a list of (l, u) per hidden layer: shapes [n_i], finite or +-inf, no NaN, l <= u."""
    if not isinstance(preact_bounds, (list, tuple)):
        raise InputError("preact_bounds must be a list of (l, u) pairs, one per hidden layer")
    if len(preact_bounds) != mlp.num_hidden_layers:
        raise ShapeError(
            f"preact_bounds has {len(preact_bounds)} entries, the model has "
            f"{mlp.num_hidden_layers} hidden layers"
        )
    out = []
    for i, (pair, n) in enumerate(zip(preact_bounds, mlp.hidden_sizes)):
        try:
            l, u = pair
        except (TypeError, ValueError):
            raise InputError(f"preact_bounds[{i}] must be a pair (l, u)") from None
        la = torch.as_tensor(l, dtype=torch.float64).reshape(-1).numpy().copy()
        ua = torch.as_tensor(u, dtype=torch.float64).reshape(-1).numpy().copy()
        if la.shape != (n,) or ua.shape != (n,):
            raise ShapeError(
                f"preact_bounds[{i}] must hold two tensors with {n} elements, got "
                f"{la.size} and {ua.size}"
            )
        if np.any(np.isnan(la)) or np.any(np.isnan(ua)):
            raise InputError(f"preact_bounds[{i}] contains NaN")
        if np.any(la > ua):
            raise InputError(f"preact_bounds[{i}] has l > u")
        out.append((la, ua))
    return out


def interval_bounds(mlp: MLP, ball: InputBall, preact_bounds=None):
    """Pre-activation bounds (l_i, u_i) per hidden layer by interval arithmetic, each layer
    intersected with the caller's ``preact_bounds`` (which must be sound) before propagating."""
    user = validate_preact_bounds(mlp, preact_bounds) if preact_bounds is not None else None
    out = []
    lo = hi = None
    for i in range(mlp.num_hidden_layers):
        w, b = mlp.weights[i], mlp.biases[i]
        if i == 0:
            l, u = first_layer_bounds(ball, w, b)
        else:
            l, u = _affine_interval(w, b, lo, hi)
        if user is not None:
            l, u = np.maximum(l, user[i][0]), np.minimum(u, user[i][1])
            if np.any(l > u):
                raise InputError(
                    f"preact_bounds[{i}] do not intersect the interval bounds of layer {i}: "
                    "they cannot be sound"
                )
        out.append((l, u))
        lo, hi = _act_interval(l, u, mlp.negative_slopes[i])
    return out


def stability(bounds) -> list[np.ndarray]:
    """Per hidden layer: ACTIVE (l > 0), INACTIVE (u < 0) or UNSTABLE."""
    return [np.where(l > 0, ACTIVE, np.where(u < 0, INACTIVE, UNSTABLE)) for l, u in bounds]


def backward_bounds(mlp: MLP, status, c: np.ndarray):
    """Interval bounds on the backward (gradient) variables.

    With 0-based hidden layers j = 0..L-2, ``per_layer[j]`` bounds the vector a that the derivative
    of hidden layer j multiplies (the gradient of c . f w.r.t. that layer's output; exact
    W_L^T c for the last hidden layer); the second value bounds the input gradient a_0.
    Derivatives: 1 for stable active neurons, k for stable inactive ones, {k, 1} for unstable
    ones.  Returns (per_layer, (la0, ua0))."""
    a = mlp.weights[-1].T @ c
    la, ua = a.copy(), a.copy()
    per_layer = [None] * mlp.num_hidden_layers
    for i in reversed(range(mlp.num_hidden_layers)):
        per_layer[i] = (la, ua)
        k = mlp.negative_slopes[i]
        st = status[i]
        dl = np.where(st == ACTIVE, 1.0, np.where(st == INACTIVE, k, min(k, 1.0)))
        du = np.where(st == ACTIVE, 1.0, np.where(st == INACTIVE, k, max(k, 1.0)))
        prods = np.stack([dl * la, dl * ua, du * la, du * ua])
        sl, su = prods.min(axis=0), prods.max(axis=0)
        la, ua = _affine_interval(mlp.weights[i].T, np.zeros(mlp.weights[i].shape[1]), sl, su)
    return per_layer, (la, ua)


# ---------------------------------------------------------------------- LPs over regions
@dataclass
class RegionLP:
    """Linear objectives over B intersected with {x : G x + g >= 0}.

    p = inf and p = 1 use scipy's HiGHS (the l1 ball through auxiliary variables s >= |x - x0|),
    p = 2 uses cvxpy (Clarabel).  ``calls`` counts the solves."""

    ball: InputBall
    calls: int = 0

    def _bounds_x(self):
        return list(zip(self.ball.box_lo, self.ball.box_hi))

    def optimize(self, obj: np.ndarray, G: np.ndarray, g: np.ndarray, maximize: bool):
        """max (or min) obj . x over the region; returns (value, x) or None if infeasible."""
        self.calls += 1
        n = self.ball.n
        sgn = -1.0 if maximize else 1.0
        if self.ball.p == 2.0:
            return self._optimize_cvx(obj, G, g, maximize)
        if self.ball.p == math.inf:
            res = linprog(
                sgn * obj,
                A_ub=-G if G.size else None,
                b_ub=g if G.size else None,
                bounds=self._bounds_x(),
                method="highs",
            )
            x = res.x if res.status == 0 else None
        else:  # p = 1: variables [x, s], |x - x0| <= s, sum s <= eps
            eye = np.eye(n)
            rows = [np.hstack([eye, -eye]), np.hstack([-eye, -eye]),
                    np.hstack([np.zeros(n), np.ones(n)])[None, :]]
            rhs = [self.ball.x0, -self.ball.x0, np.array([self.ball.eps])]
            if G.size:
                rows.append(np.hstack([-G, np.zeros_like(G)]))
                rhs.append(g)
            res = linprog(
                np.concatenate([sgn * obj, np.zeros(n)]),
                A_ub=np.vstack(rows),
                b_ub=np.concatenate(rhs),
                bounds=self._bounds_x() + [(0, None)] * n,
                method="highs",
            )
            x = res.x[:n] if res.status == 0 else None
        if res.status == 2:
            return None
        if res.status != 0:
            raise SolverError(f"HiGHS LP failed over an activation region: {res.message}")
        return float(obj @ x), x

    def _optimize_cvx(self, obj, G, g, maximize):
        x = cp.Variable(self.ball.n)
        cons = [cp.norm(x - self.ball.x0, 2) <= self.ball.eps]
        fin_lo = np.isfinite(self.ball.lo)
        fin_hi = np.isfinite(self.ball.hi)
        if fin_lo.any():
            cons.append(x[fin_lo] >= self.ball.lo[fin_lo])
        if fin_hi.any():
            cons.append(x[fin_hi] <= self.ball.hi[fin_hi])
        if G.size:
            cons.append(G @ x + g >= 0)
        expr = obj @ x
        prob = cp.Problem(cp.Maximize(expr) if maximize else cp.Minimize(expr), cons)
        try:
            prob.solve(solver=cp.CLARABEL)
        except cp.error.SolverError as e:
            raise SolverError(f"Clarabel failed over an activation region: {e}") from e
        if prob.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
            return None
        if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            raise SolverError(f"Clarabel returned status {prob.status} over an activation region")
        xv = np.asarray(x.value, dtype=np.float64)
        return float(obj @ xv), xv

    def deepest_point(self, G: np.ndarray, g: np.ndarray):
        """A point of the region as deep inside as possible: maximise t subject to
        G_j x + g_j >= t ||G_j||_2 (t <= 1).  Returns (x, t) or None if the LP fails; t < 0
        means the region misses B (by about |t| in distance)."""
        self.calls += 1
        ball = self.ball
        n = ball.n
        if G.size == 0:
            return np.clip(ball.x0, ball.lo, ball.hi), 1.0
        norms = np.linalg.norm(G, axis=1)
        norms = np.where(norms > 0, norms, 1.0)
        if ball.p == 2.0:
            x = cp.Variable(n)
            t = cp.Variable()
            cons = [cp.norm(x - ball.x0, 2) <= ball.eps, t <= 1, G @ x + g - t * norms >= 0]
            fin_lo, fin_hi = np.isfinite(ball.lo), np.isfinite(ball.hi)
            if fin_lo.any():
                cons.append(x[fin_lo] >= ball.lo[fin_lo])
            if fin_hi.any():
                cons.append(x[fin_hi] <= ball.hi[fin_hi])
            prob = cp.Problem(cp.Maximize(t), cons)
            try:
                prob.solve(solver=cp.CLARABEL)
            except cp.error.SolverError:
                return None
            if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
                return None
            return np.asarray(x.value, dtype=np.float64), float(t.value)
        # variables [x, t] (+ s for the l1 ball): -(G x - t*norms) <= g, t <= 1
        A = [np.hstack([-G, norms[:, None]])]
        b = [g]
        bounds = list(zip(ball.box_lo, ball.box_hi)) + [(None, 1.0)]
        nv = n + 1
        if ball.p == 1.0:
            eye = np.eye(n)
            zc = np.zeros((n, 1))
            A = [np.hstack([A[0], np.zeros((G.shape[0], n))]),
                 np.hstack([eye, zc, -eye]), np.hstack([-eye, zc, -eye]),
                 np.hstack([np.zeros(n + 1), np.ones(n)])[None, :]]
            b = [g, ball.x0, -ball.x0, np.array([ball.eps])]
            bounds += [(0, None)] * n
            nv = 2 * n + 1
        c = np.zeros(nv)
        c[n] = -1.0
        res = linprog(c, A_ub=np.vstack(A), b_ub=np.concatenate(b), bounds=bounds,
                      method="highs")
        if res.status != 0:
            return None
        return res.x[:n], float(res.x[n])


def pattern_region(mlp: MLP, pattern: Pattern, layers=None):
    """Rows (G, g) with G x + g >= 0 describing the closed region of ``pattern``: for every
    neuron of the listed hidden layers (all by default), z >= 0 if active, z <= 0 if not.
    Within the region the pre-activations are the affine maps used here."""
    n = mlp.in_features
    A = np.eye(n)
    cvec = np.zeros(n)
    Gs, gs = [], []
    for i in range(mlp.num_hidden_layers):
        A = mlp.weights[i] @ A
        cvec = mlp.weights[i] @ cvec + mlp.biases[i]
        sign = np.where(pattern[i], 1.0, -1.0)
        if layers is None or i in layers:
            Gs.append(sign[:, None] * A)
            gs.append(sign * cvec)
        d = np.where(pattern[i], 1.0, mlp.negative_slopes[i])
        A = d[:, None] * A
        cvec = d * cvec
    if not Gs:
        return np.zeros((0, n)), np.zeros(0)
    return np.vstack(Gs), np.concatenate(gs)


@dataclass(frozen=True)
class Realization:
    """A point x of B consistent with a pattern: ``violation`` = max over neurons of the wrong-
    side pre-activation in float64 (<= 0: exactly consistent); ``margin`` = the LP's depth t."""

    x: np.ndarray
    violation: float
    margin: float


def realize_pattern(mlp: MLP, ball: InputBall, pattern: Pattern, lp: RegionLP,
                    tol: float = 1e-7) -> Realization | None:
    """Find a point of B in the closed region of ``pattern`` (all neurons constrained), as deep
    inside as possible; None if the region misses B by more than ``tol`` (relative) or the
    point found violates the pattern by more than that in float64."""
    G, g = pattern_region(mlp, pattern)
    res = lp.deepest_point(G, g)
    if res is None:
        return None
    x, t = res
    scale = 1.0 + float(np.max(np.abs(ball.box_hi - ball.box_lo), initial=0.0))
    if t < -tol * scale:
        return None
    x = ball.pull_inside(x)
    violation = mlp.pattern_violation(x, pattern)
    if violation > tol * scale:  # not consistent in float64: not a witness
        return None
    return Realization(x, violation, t)


def pattern_to_tuple(pattern: Pattern) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(v) for v in p) for p in pattern)
