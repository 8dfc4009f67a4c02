"""Test oracles for lipbound's bounds (test code: production never imports this module).

1. ``enumerate_local_lipschitz``: the exact local Lipschitz constant of a tiny MLP by
   enumerating reachable activation patterns. Definitions (see :mod:`lipbound.exact.mlp`): for
   the spec row c, g(x) = c . f(x); over B = {x : ||x - x0||_p <= eps} (intersected with the
   optional box data_range), the value is

       L = max over x in B and patterns delta consistent with x of ||W_1^T D_1 ... W_L^T c||_q

   with q the dual norm of p and *closed* consistency (delta = active if z > 0, inactive if
   z < 0, either if z = 0). This is the chain-rule (Clarke-superset) constant the LipMIP MILP
   computes.

   Algorithm: interval bounds classify neurons (stable active l > 0, stable inactive u < 0,
   else unstable); a depth-first search assigns the unstable neurons layer by layer. With all
   earlier layers fixed, a neuron's pre-activation is affine in x on the current region, so two
   LPs (its min and max over B intersected with the region) tell which of its branches are
   reachable. Every reachable full pattern's gradient norm is evaluated; the maximum is
   returned with a witness point found by a max-margin LP. LPs: scipy HiGHS for p = inf and
   p = 1 (the l1 ball through auxiliary variables), cvxpy/Clarabel for p = 2. Reachability is
   judged with a tolerance of 1e-9 (relative), so regions that only touch B (z = 0 on the
   boundary) count as reachable, as the closed semantics requires.

2. Helpers for tests of any bound against the exact baselines: random MLPs, points sampled in
   B, sampled lower bounds from autograd, and exact (tightest sound) pre-activation bounds of
   tiny nets.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import torch
from torch import nn

from lipbound.errors import ProblemTooLargeError, SolverError
from lipbound.exact.domain import (
    ACTIVE,
    UNSTABLE,
    InputBall,
    RegionLP,
    interval_bounds,
    make_ball,
    pattern_to_tuple,
    realize_pattern,
    stability,
    vec_norm,
)
from lipbound.exact.mlp import MLP, as_mlp
from lipbound.exact.result import ExactResult
from lipbound.norms import dual_norm

DEFAULT_MAX_UNSTABLE = 22


def enumerate_local_lipschitz(
    mlp,
    x0,
    eps,
    p=math.inf,
    c=None,
    data_range=None,
    *,
    max_unstable: int = DEFAULT_MAX_UNSTABLE,
) -> ExactResult:
    """Exact local Lipschitz constant of c . f over B by pattern enumeration (tiny nets only).

    Args:
        mlp: an :class:`MLP` or an ``nn.Sequential`` of Flatten/Linear/ReLU/LeakyReLU.
        x0: centre, any shape with ``in_features`` elements.  eps: radius >= 0.
        p: inf, 2 or 1 (the ball's norm; the gradient is measured in the dual norm).
        c: spec row of length K (None allowed when K == 1).
        data_range: optional (lo, hi), scalars or tensors broadcastable to x0.
        max_unstable: refuse (ProblemTooLargeError) above this many unstable neurons.
    """
    t_start = time.perf_counter()
    mlp = as_mlp(mlp)
    ball = make_ball(mlp, x0, eps, p, data_range)
    cvec = mlp.spec_row(c)
    q = dual_norm(ball.p)
    bounds = interval_bounds(mlp, ball)
    status = stability(bounds)
    n_unstable = int(sum(int(np.sum(s == UNSTABLE)) for s in status))
    if n_unstable > max_unstable:
        raise ProblemTooLargeError(
            f"{n_unstable} unstable neurons exceed max_unstable={max_unstable} "
            f"(up to 2^{n_unstable} patterns); pass a larger max_unstable= to "
            "enumerate_local_lipschitz, or use milp_local_lipschitz"
        )
    lp = RegionLP(ball)
    xscale = float(np.max(np.abs(np.concatenate([ball.box_lo, ball.box_hi])), initial=0.0))
    unstable_idx = [np.flatnonzero(s == UNSTABLE) for s in status]
    L = mlp.num_hidden_layers
    n = mlp.in_features

    best = {"value": -1.0, "pattern": None}
    counters = {"leaves": 0}

    def leaf(pattern: list[np.ndarray]) -> None:
        counters["leaves"] += 1
        pat = tuple(p_.copy() for p_ in pattern)
        val = vec_norm(mlp.gradient_for_pattern(pat, cvec), q)
        if val > best["value"]:
            best["value"], best["pattern"] = val, pat

    def region(rows: list[np.ndarray], rhs: list[float]):
        if not rows:
            return np.zeros((0, n)), np.zeros(0)
        return np.vstack(rows), np.asarray(rhs)

    def dfs(layer: int, A: np.ndarray, cv: np.ndarray, pos: int, pattern: list[np.ndarray],
            rows: list[np.ndarray], rhs: list[float]) -> None:
        if layer == L:
            leaf(pattern)
            return
        idx = unstable_idx[layer]
        if pos == len(idx):  # layer complete: compose its affine map and go deeper
            d = np.where(pattern[layer], 1.0, mlp.negative_slopes[layer])
            if layer + 1 == L:
                dfs(L, A, cv, 0, pattern, rows, rhs)
                return
            w, b = mlp.weights[layer + 1], mlp.biases[layer + 1]
            dfs(layer + 1, w @ (d[:, None] * A), w @ (d * cv) + b, 0, pattern, rows, rhs)
            return
        j = int(idx[pos])
        gz, cz = A[j], float(cv[j])
        G, g = region(rows, rhs)
        lo_res = lp.optimize(gz, G, g, maximize=False)
        if lo_res is None:  # cannot happen: the parent region was checked non-empty
            raise SolverError("an activation region checked reachable became infeasible")
        hi_res = lp.optimize(gz, G, g, maximize=True)
        zmin = lo_res[0] + cz
        zmax = hi_res[0] + cz
        tol = 1e-9 * (1.0 + abs(cz) + float(np.sum(np.abs(gz))) * xscale)
        can_active = zmax >= -tol
        can_inactive = zmin <= tol
        for active, ok in ((True, can_active), (False, can_inactive)):
            if not ok:
                continue
            pattern[layer][j] = active
            needs_row = can_active and can_inactive  # otherwise implied by the region
            if needs_row:
                s = 1.0 if active else -1.0
                rows.append(s * gz)
                rhs.append(s * cz)
            dfs(layer, A, cv, pos + 1, pattern, rows, rhs)
            if needs_row:
                rows.pop()
                rhs.pop()

    pattern0 = [s == ACTIVE for s in status]
    if L == 0:
        leaf([])
    else:
        dfs(0, mlp.weights[0].copy(), mlp.biases[0].copy(), 0, pattern0, [], [])

    pat = best["pattern"]
    real = realize_pattern(mlp, ball, pat, lp)
    if real is None:
        raise SolverError("could not find a witness point for the best activation pattern")
    value = float(best["value"])
    witness = torch.from_numpy(real.x.copy()).reshape(ball.shape)
    return ExactResult(
        value=value,
        lower=value,
        upper=value,
        status="optimal",
        witness=witness,
        pattern=pattern_to_tuple(pat),
        solve_time=time.perf_counter() - t_start,
        n_binaries=0,
        n_unstable=n_unstable,
        method="enumerate",
        norm=ball.p,
        eps=ball.eps,
        details={
            "n_patterns": counters["leaves"],
            "n_lps": lp.calls,
            "unstable_per_layer": [int(len(i)) for i in unstable_idx],
            "witness_violation": real.violation,
            "witness_margin": real.margin,
        },
    )


def random_sequential(sizes, seed: int, negative_slope: float = 0.0,
                      weight_std: float | None = None) -> nn.Sequential:
    """nn.Sequential(Linear, act, ..., Linear) with PyTorch's default init under ``seed``
    (or N(0, weight_std^2) weights and biases), float32, eval mode."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        if weight_std is not None:
            with torch.no_grad():
                lin.weight.normal_(0.0, weight_std)
                lin.bias.normal_(0.0, weight_std)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU() if negative_slope == 0.0 else nn.LeakyReLU(negative_slope))
    return nn.Sequential(*layers).eval()


def random_mlp(sizes, seed: int, negative_slope: float = 0.0,
               weight_std: float | None = None) -> MLP:
    return MLP.from_sequential(random_sequential(sizes, seed, negative_slope, weight_std))


def sample_ball(ball: InputBall, n: int, seed: int = 0) -> np.ndarray:
    """n points of B (rows): half inside, half on the ball's surface (corners of the box for
    p = inf, vertices of the l1 ball for p = 1 among them), then moved into the data range."""
    rng = np.random.default_rng(seed)
    d = ball.n
    pts = []
    for i in range(n):
        if ball.p == math.inf:
            u = rng.uniform(-1, 1, d) if i % 2 == 0 else rng.choice([-1.0, 1.0], d)
            x = ball.x0 + ball.eps * u
        else:
            g = rng.standard_normal(d)
            if ball.p == 1.0:
                g = rng.exponential(1.0, d) * rng.choice([-1.0, 1.0], d)
                if i % 3 == 0:  # vertices of the l1 ball
                    g = np.zeros(d)
                    g[rng.integers(d)] = rng.choice([-1.0, 1.0])
            nrm = np.linalg.norm(g, ord=ball.p)
            r = 1.0 if i % 2 else rng.uniform(0, 1) ** (1.0 / d)
            x = ball.x0 + ball.eps * r * g / max(nrm, 1e-300)
        pts.append(ball.pull_inside(x))
    return np.array(pts)


def sampled_gradient_norms(model: nn.Module, points: np.ndarray, c: np.ndarray, q: float):
    """Dual norms of autograd gradients of c . model at the given points (float64)."""
    m = model.to(torch.float64)
    x = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    out = m(x) @ torch.as_tensor(c, dtype=torch.float64)
    (g,) = torch.autograd.grad(out.sum(), x)
    return torch.linalg.vector_norm(g, ord=q, dim=1).numpy()


def sampled_lower(mlp: MLP, x0, eps, p, c=None, data_range=None, n: int = 2000,
                  seed: int = 0) -> float:
    """max over sampled points of B of ||grad (c . f)||_q by autograd (a lower bound on L)."""
    ball = make_ball(mlp, x0, eps, p, data_range)
    pts = sample_ball(ball, n, seed)
    return float(np.max(sampled_gradient_norms(mlp.to_sequential(), pts, mlp.spec_row(c),
                                               dual_norm(ball.p))))


def exact_preact_bounds(mlp: MLP, x0, eps, p, data_range=None, max_unstable: int = 14):
    """The tightest sound pre-activation bounds (min and max of every z_i over B), by
    enumerating the activation patterns of the earlier layers (LP per region).  Tiny nets only."""
    ball = make_ball(mlp, x0, eps, p, data_range)
    st = stability(interval_bounds(mlp, ball))
    lp = RegionLP(ball)
    n = mlp.in_features
    out = []
    for layer in range(mlp.num_hidden_layers):
        unst = [(i, j) for i in range(layer) for j in np.flatnonzero(st[i] == UNSTABLE)]
        if len(unst) > max_unstable:
            raise ValueError("too many unstable neurons for exact bounds")
        lo = np.full(mlp.hidden_sizes[layer], np.inf)
        hi = np.full(mlp.hidden_sizes[layer], -np.inf)
        for choice in itertools.product([True, False], repeat=len(unst)):
            pat = [st[i] > 0 for i in range(layer)]
            pat = [p_.copy() for p_ in pat]
            for (i, j), v in zip(unst, choice):
                pat[i][j] = v
            # region constraints of the earlier layers and the affine map of layer `layer`
            A, cv = np.eye(n), np.zeros(n)
            Gs, gs = [], []
            for i in range(layer + 1):
                A = mlp.weights[i] @ A
                cv = mlp.weights[i] @ cv + mlp.biases[i]
                if i == layer:
                    break
                sgn = np.where(pat[i], 1.0, -1.0)
                Gs.append(sgn[:, None] * A)
                gs.append(sgn * cv)
                dlt = np.where(pat[i], 1.0, mlp.negative_slopes[i])
                A, cv = dlt[:, None] * A, dlt * cv
            G = np.vstack(Gs) if Gs else np.zeros((0, n))
            g = np.concatenate(gs) if gs else np.zeros(0)
            for j in range(A.shape[0]):
                r = lp.optimize(A[j], G, g, maximize=False)
                if r is None:
                    break  # region empty
                lo[j] = min(lo[j], r[0] + cv[j])
                hi[j] = max(hi[j], lp.optimize(A[j], G, g, maximize=True)[0] + cv[j])
        pad = 1e-9 * (1 + np.abs(lo) + np.abs(hi))  # LP tolerance: stay sound
        out.append((torch.from_numpy(lo - pad), torch.from_numpy(hi + pad)))
    return out
