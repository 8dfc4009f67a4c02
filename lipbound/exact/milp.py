"""Exact local Lipschitz constant of a ReLU / LeakyReLU MLP by a mixed-integer LP (LipMIP-style).

Value computed (see :mod:`lipbound.exact.mlp` for the network notation): for the spec row c,

    L = max over x in B and patterns delta consistent with x of ||W_1^T D_1 ... W_L^T c||_q,

B = {x : ||x - x0||_p <= eps} intersected with the optional box data_range, q the dual norm of p,
closed consistency (delta free where z = 0).  Supported: p = inf (q = 1) and p = 1 (q = inf).

The encoding (one binary per unstable neuron shared by the forward and backward pass, big-M
switches, sign binaries for the dual norm) is built by :mod:`lipbound.exact.milp_encoding`;
this module checks the arguments, solves with HiGHS and certifies what it reads back.

The bounds (forward l, u; backward la, ua; the input gradient) default to interval arithmetic;
``preact_bounds`` (one (l, u) per hidden layer) and ``extra_bounds`` (a
:class:`~lipbound.exact.bounds.MilpBounds`, e.g. CROWN's from
:mod:`lipbound.exact.engine_bounds`) are intersected with them, and the objective is capped by
the bounds' norm bound (a valid cut).  **They must be sound** over the chain-rule set: unsound
bounds cut off parts of it and make the "exact" value wrong.

Certification: the returned ``lower`` is recomputed in float64 from an activation pattern for which
an LP finds a witness point in B (closed consistency checked in float64); ``upper`` is HiGHS' dual
bound (``mip_dual_bound`` of the minimisation cvxpy passes to HiGHS, negated, then widened
outward by 1e-8 relative for the solver's 1e-9 tolerances), never the primal value, and never
more than the bounds' norm bound.  On a time-out the status is "timeout" and
[lower, upper] brackets the constant (upper = +inf if no dual bound can be read).
"""

from __future__ import annotations

import math
import time
import warnings

import cvxpy as cp
import numpy as np
import torch

from lipbound.errors import (
    InputError,
    ProblemTooLargeError,
    ShapeError,
    SolverError,
    UnsupportedNormError,
)
from lipbound.exact.bounds import MilpBounds, intersect_forward, interval_milp_bounds
from lipbound.exact.domain import (
    ACTIVE,
    UNSTABLE,
    RegionLP,
    make_ball,
    pattern_to_tuple,
    realize_pattern,
    stability,
    vec_norm,
)
from lipbound.exact.milp_encoding import (
    MilpModel,
    encode_backward,
    encode_forward,
    encode_input,
    encode_objective,
    objective_plan,
)
from lipbound.exact.mlp import as_mlp
from lipbound.exact.result import ExactResult
from lipbound.highs import fit_thread_pool, silence_banner
from lipbound.inputs import check_timeout
from lipbound.norms import dual_norm

DEFAULT_MAX_BINARIES = 1000


def _widen_up(v: float) -> float:
    """Round a solver's bound outward by more than its feasibility tolerances (1e-9)."""
    return v + 1e-8 * abs(v) + 1e-12


def _check_extra(mlp, eb: MilpBounds) -> MilpBounds:
    """Shape check of caller-supplied bounds (their soundness is the caller's promise)."""
    sizes = mlp.hidden_sizes
    ok = (isinstance(eb, MilpBounds) and len(eb.preact) == len(sizes)
          and len(eb.backward) == len(sizes)
          and all(l.shape == u.shape == (n,) for (l, u), n in zip(eb.preact, sizes))
          and all(l.shape == u.shape == (n,) for (l, u), n in zip(eb.backward, sizes))
          and eb.gradient[0].shape == eb.gradient[1].shape == (mlp.in_features,))
    if not ok:
        raise ShapeError("extra_bounds do not match the network's layer sizes")
    return eb


def _sampled_start(mlp, ball, cvec, q, n: int):
    """Best gradient norm among clip(x0) and n deterministic samples of B (box corners -- all of
    them when 2^d <= n/2 -- and interior points for p = inf; all vertices and surface points for
    p = 1), each point with the pattern autograd uses there (consistent with it by construction).
    """
    X = np.clip(ball.x0, ball.lo, ball.hi)[None, :]
    if n > 0 and ball.eps > 0:
        rng = np.random.default_rng(0)
        d = ball.n
        if ball.p == math.inf:
            U = rng.uniform(-1, 1, (n, d))
            if 2**d <= n // 2:  # every corner of the box
                corners = ((np.arange(2**d)[:, None] >> np.arange(d)) & 1) * 2.0 - 1.0
                U[: 2**d] = corners
            else:
                U[1::2] = np.sign(U[1::2])
        else:  # l1 ball
            U = rng.exponential(1.0, (n, d)) * rng.choice([-1.0, 1.0], (n, d))
            U[1::2] = 0.0
            m = U[1::2].shape[0]
            U[1::2][np.arange(m), rng.integers(d, size=m)] = rng.choice([-1.0, 1.0], m)
            U /= np.maximum(np.sum(np.abs(U), axis=1, keepdims=True), 1e-300)
            U = np.vstack([U, np.eye(d), -np.eye(d)])  # every vertex
            U *= 1 - 1e-12  # stay inside the ball despite rounding
        P = np.clip(ball.x0 + ball.eps * U, ball.box_lo, ball.box_hi)
        # clipping to the bounding box keeps l_inf points in B exactly; l1 points are checked
        ok = (np.ones(len(P), dtype=bool) if ball.p == math.inf
              else np.linalg.norm(P - ball.x0, ord=ball.p, axis=1) <= ball.eps)
        X = np.vstack([X, P[ok]])
    norms = np.linalg.norm(mlp.gradients_batch(X, cvec), ord=q, axis=1)
    x = X[int(np.argmax(norms))]
    pat = mlp.pattern_at(x)
    return x, pat, vec_norm(mlp.gradient_for_pattern(pat, cvec), q)


#: HiGHS gets at least this many seconds when the set-up used up the time limit
_MIN_SOLVE_SECONDS = 0.01


def milp_local_lipschitz(
    mlp,
    x0,
    eps,
    p=math.inf,
    c=None,
    preact_bounds=None,
    data_range=None,
    timeout: float | None = None,
    max_binaries: int = DEFAULT_MAX_BINARIES,
    *,
    extra_bounds: MilpBounds | None = None,
    objective_cut: bool = True,
    rel_gap: float = 1e-7,
    n_start: int = 4096,
    threads: int | None = None,
    verbose: bool = False,
) -> ExactResult:
    """Exact chain-rule local Lipschitz constant of c . f over B by a MILP (see module docstring).

    Args:
        mlp: an :class:`MLP` or an ``nn.Sequential`` of Flatten/Linear/ReLU/LeakyReLU
            (anything else, e.g. Tanh: UnsupportedModelError).
        x0, eps, p, c, data_range: the input set and spec row; p must be inf or 1.
        preact_bounds: optional sound (l, u) per hidden layer (tighter big-M).
        extra_bounds: optional sound :class:`~lipbound.exact.bounds.MilpBounds` (e.g. from
            CROWN), intersected with the interval bounds of every MILP quantity.
        objective_cut: add the (sound) cut objective <= the bounds' norm bound.
        timeout: seconds for this call, set-up included (HiGHS gets what the set-up leaves;
            None: no limit; InputError unless finite > 0).
        max_binaries: refuse (ProblemTooLargeError) above this many binaries.
        rel_gap: HiGHS' relative MIP gap for "optimal" (upper - lower <= rel_gap * upper).
        n_start: points of B sampled (deterministically) for a first attained lower bound.
    """
    t_start = time.perf_counter()
    mlp = as_mlp(mlp)
    tlimit = _check_args(timeout, max_binaries, rel_gap)
    ball = make_ball(mlp, x0, eps, p, data_range)
    if ball.p == 2.0:
        raise UnsupportedNormError(
            "the MILP handles p = inf and p = 1 only (an l2 ball makes it a mixed-integer SOCP); "
            "use method 'bab' of lipbound.local_lipschitz for p = 2"
        )
    cvec = mlp.spec_row(c)
    q = dual_norm(ball.p)
    mb, interval_upper = _milp_bounds(mlp, ball, cvec, q, preact_bounds, extra_bounds)
    status = stability(list(mb.preact))
    la0, ua0 = mb.gradient

    # a first attained value: the best gradient at the point of B nearest x0 and at a few
    # deterministic samples of B (each point with its own pattern, which is consistent)
    start = _sampled_start(mlp, ball, cvec, q, n_start)

    unstable_idx = [np.flatnonzero(s == UNSTABLE) for s in status]
    n_unstable = int(sum(i.size for i in unstable_idx))
    plan = objective_plan(q, la0, ua0, start[2])
    n_binaries = _check_size(n_unstable, plan["n_binaries"], max_binaries)

    model = encode_input(mlp, ball)
    encode_forward(model, mlp, list(mb.preact), status, unstable_idx)
    grad = encode_backward(model, mlp, cvec, status, mb.backward, unstable_idx)
    obj = encode_objective(model, q, grad, plan, la0, ua0)
    if objective_cut and math.isfinite(interval_upper):
        model.cons.append(obj <= interval_upper)  # sound: the bounds hold on the whole feasible set
    prob = cp.Problem(cp.Maximize(obj), model.cons)

    if tlimit is not None:  # the time limit covers the set-up above, not only HiGHS's solve
        tlimit = max(tlimit - (time.perf_counter() - t_start), _MIN_SOLVE_SECONDS)
    res_status, info, solve_seconds = _solve(prob, rel_gap, tlimit, threads, verbose)
    primal, dual_upper = _certified_upper(prob, info, n_binaries > 0, res_status)
    upper = min(dual_upper, interval_upper)
    best_x, best_pat, lower, witness_info = _attained(
        mlp, ball, cvec, q, model, status, unstable_idx, primal, start
    )
    if upper < lower:  # solver tolerances: the attained value is the truth
        upper = lower
    violation = mlp.pattern_violation(best_x, best_pat) if mlp.num_hidden_layers else -math.inf
    witness = torch.from_numpy(np.asarray(best_x, dtype=np.float64).copy()).reshape(ball.shape)
    return ExactResult(
        value=upper,
        lower=lower,
        upper=upper,
        status=res_status,
        witness=witness,
        pattern=pattern_to_tuple(best_pat),
        solve_time=time.perf_counter() - t_start,
        n_binaries=n_binaries,
        n_unstable=n_unstable,
        method="milp",
        norm=ball.p,
        eps=ball.eps,
        details={
            "solver_time": solve_seconds,
            "solver_primal": primal if primal is not None else math.nan,
            "solver_dual_bound": dual_upper,
            "interval_upper": interval_upper,
            "bounds_source": mb.source,
            "stable_per_layer": mb.stable_per_layer(),
            "mip_nodes": int(getattr(info, "mip_node_count", -1)) if info is not None else -1,
            "unstable_per_layer": [int(i.size) for i in unstable_idx],
            "sign_binaries": plan["n_binaries"],
            "preact_bounds": "given" if preact_bounds is not None else mb.source,
            "witness": witness_info,
            "witness_violation": violation,
        },
    )


def _check_args(timeout, max_binaries, rel_gap) -> float | None:
    """The time limit in seconds (None: none) after checking the solver arguments."""
    tlimit = check_timeout(timeout)
    if not isinstance(max_binaries, (int, np.integer)) or max_binaries < 0:
        raise InputError(f"max_binaries must be a non-negative integer, got {max_binaries!r}")
    if not (isinstance(rel_gap, (int, float)) and 0 <= rel_gap < 1):
        raise InputError(f"rel_gap must be in [0, 1), got {rel_gap!r}")
    return tlimit


def _milp_bounds(mlp, ball, cvec, q, preact_bounds, extra_bounds):
    """The bounds of every MILP quantity and the norm bound they give (a valid objective cut)."""
    mb = interval_milp_bounds(mlp, ball, cvec, preact_bounds)
    if extra_bounds is not None:
        mb = intersect_forward(mlp, ball, cvec, mb, _check_extra(mlp, extra_bounds))
    la0, ua0 = mb.gradient
    mag0 = np.maximum(np.abs(la0), np.abs(ua0))
    interval_upper = min(mb.norm_upper, float(np.sum(mag0)) if q == 1.0
                         else float(np.max(mag0, initial=0.0)))
    return mb, interval_upper


def _check_size(n_unstable: int, n_sign: int, max_binaries: int) -> int:
    """The number of binaries, refused above ``max_binaries``."""
    n_binaries = n_unstable + n_sign
    if n_binaries > max_binaries:
        raise ProblemTooLargeError(
            f"the MILP needs {n_binaries} binaries ({n_unstable} unstable neurons + "
            f"{n_sign} sign binaries), above max_binaries={max_binaries}; pass a "
            "larger max_binaries= (solve time grows exponentially) or tighter bounds "
            "(big_m='crown')"
        )
    return n_binaries


#: HiGHS options every MILP of lipbound runs with (tight tolerances, a fixed seed)
HIGHS_BASE_OPTIONS = {
    "mip_feasibility_tolerance": 1e-9,
    "primal_feasibility_tolerance": 1e-9,
    "dual_feasibility_tolerance": 1e-9,
    "random_seed": 0,
}


def solve_with_highs(prob: cp.Problem, options: dict, what: str, verbose: bool = False) -> None:
    """``prob.solve`` on HiGHS with ``HIGHS_BASE_OPTIONS`` updated by ``options``, its banner
    kept off stdout and cvxpy's "inaccurate" warning on a time limit silenced (the status
    says it); SolverError naming ``what`` if cvxpy reports a solver failure. A ``threads``
    count in ``options`` is honoured whatever count an earlier solve of the process used."""
    options = {**HIGHS_BASE_OPTIONS, **options}
    fit_thread_pool(options.get("threads"))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Solution may be inaccurate")
            silence_banner()  # cvxpy constructs its own Highs: keep its banner off stdout
            prob.solve(solver=cp.HIGHS, verbose=verbose, **options)
    except cp.error.SolverError as e:
        raise SolverError(f"HiGHS failed on {what}: {e}") from e


def _solve(prob, rel_gap: float, tlimit: float | None, threads, verbose: bool,
           extra: dict | None = None):
    """Solve with HiGHS: ("optimal" or "timeout", HiGHS' extra stats or None, seconds);
    ``extra``: more HiGHS options (a stop at ``objective_target`` reads as "timeout")."""
    opts: dict = {"mip_rel_gap": float(rel_gap), "mip_abs_gap": 1e-10}
    if tlimit is not None:
        opts["time_limit"] = tlimit
    if threads is not None:
        opts["threads"] = int(threads)
    opts.update(extra or {})
    t_solve = time.perf_counter()
    solve_with_highs(prob, opts, "the Lipschitz MILP", verbose)
    solve_seconds = time.perf_counter() - t_solve
    info = prob.solver_stats.extra_stats if prob.solver_stats is not None else None

    if prob.status == cp.OPTIMAL:
        res_status = "optimal"
    elif prob.status == cp.USER_LIMIT:
        res_status = "timeout"
    elif prob.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        raise SolverError(
            "the Lipschitz MILP is infeasible although B is not empty: the preact_bounds "
            "passed are probably not sound"
        )
    else:
        raise SolverError(f"HiGHS returned status {prob.status!r} on the Lipschitz MILP")
    return res_status, info, solve_seconds


def _certified_upper(prob, info, has_ints: bool, res_status: str) -> tuple[float | None, float]:
    """(the primal value or None, the certified upper bound: HiGHS' dual bound, widened)."""
    dual_upper = math.inf
    primal = None
    if info is not None:
        feasible = getattr(info, "primal_solution_status", 0) == 2
        if feasible and prob.value is not None and np.isfinite(prob.value):
            primal = float(prob.value)
            # cvxpy hands HiGHS "minimise -obj": check that sign convention before using it
            if abs(primal + float(info.objective_function_value)) > 1e-6 * (1 + abs(primal)):
                raise SolverError("unexpected objective sign convention from cvxpy/HiGHS")
        if has_ints:
            mdb = float(getattr(info, "mip_dual_bound", math.nan))
            if math.isfinite(mdb):
                dual_upper = _widen_up(-mdb)
        elif res_status == "optimal" and primal is not None:
            dual_upper = _widen_up(primal)  # an LP: strong duality
    return primal, dual_upper


def _attained(mlp, ball, cvec, q, model: MilpModel, status, unstable_idx, primal, start):
    """The best attained value: the sampled ``start`` (x, pattern, value) or the solver's point.

    The solver's activation pattern counts when an LP finds a witness point of B in its closed
    region (checked in float64); otherwise the solver's point, pulled into B, with its own
    pattern. Returns (x, pattern, value, witness details).
    """
    best_x, best_pat, best_lower = start
    witness_info = {"source": "sampled start"}
    if model.x.value is not None and primal is not None:
        xv = np.asarray(model.x.value, dtype=np.float64)
        pat = []
        for i in range(mlp.num_hidden_layers):
            pi = status[i] == ACTIVE
            d, _ = model.switches[i]
            if d is not None:
                pi = pi.copy()
                pi[unstable_idx[i]] = np.asarray(d.value) > 0.5
            pat.append(pi)
        pat = tuple(pat)
        real = realize_pattern(mlp, ball, pat, RegionLP(ball))
        if real is not None:
            cand_x, cand_pat = real.x, pat
            witness_info = {"source": "milp pattern", "margin": real.margin}
        else:  # the solver's pattern is not realisable in float64: use the point's own pattern
            cand_x = ball.pull_inside(xv)
            cand_pat = mlp.pattern_at(cand_x)
            witness_info = {"source": "milp point (pattern not realisable)"}
        val = vec_norm(mlp.gradient_for_pattern(cand_pat, cvec), q)
        if val > best_lower:
            best_lower, best_x, best_pat = val, cand_x, cand_pat
        else:
            witness_info = {"source": "sampled start"}
    return best_x, best_pat, best_lower, witness_info
