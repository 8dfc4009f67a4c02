"""``exact_local_lipschitz``: the exact local Lipschitz constant of a ReLU / LeakyReLU network as a
:class:`~lipbound.results.LipschitzResult` (``method="exact"`` of :func:`lipbound.local_lipschitz`).

For each spec row s it solves the LipMIP-style MILP of :mod:`lipbound.exact.milp` over the
chain-rule Clarke set of c_s . f on the input set, with big-M constants from lipbound's CROWN
bounds of the joint forward + Jacobian graph (``big_m="crown"``, intersected with interval
arithmetic) or from interval arithmetic alone (``big_m="interval"``).

Guarantees per row: ``upper[s]`` is HiGHS' dual bound widened outward (on "certified" rows it
equals the optimum up to the MIP gap 1e-7); ``lower[s]`` is the dual norm of the autograd
gradient of a float64 copy of the model at ``witness[s]``, a point of the input set.  On a
time-out the rows not proven optimal keep their dual bound as ``upper`` (status "timeout").
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lipbound.bounds.domains import make_domain
from lipbound.errors import InputError, ProblemTooLargeError, SolverError, UnsupportedNormError
from lipbound.exact.bounds import MilpBounds, intersect_forward, interval_milp_bounds
from lipbound.exact.domain import make_ball
from lipbound.exact.engine_bounds import engine_milp_bounds
from lipbound.exact.from_graph import GraphMLP, mlp_from_graph
from lipbound.exact.milp import DEFAULT_MAX_BINARIES, milp_local_lipschitz
from lipbound.inputs import (
    as_tensor,
    batched_input,
    check_dtype,
    check_eps,
    check_finite_result,
    check_timeout,
    get_graph,
    resolve_model,
    spec_matrix,
)
from lipbound.norms import dual_norm, parse_norm
from lipbound.progress import bar
from lipbound.results import LipschitzResult

BIG_M_SOURCES = ("crown", "interval")
_MIN_ROW_TIME = 0.05  # seconds a row gets when the overall timeout is already used up


def _check_options(norm: Any, big_m: str, max_binaries: Any) -> float:
    p = parse_norm(norm)
    if p == 2.0:
        raise UnsupportedNormError(
            "method 'exact' supports the l_inf and l_1 input norms (an l_2 ball makes the MILP "
            "a mixed-integer SOCP); for l_2 use method='bab' or 'alpha-crown', or the global "
            "LipSDP bound lipbound.exact.lipsdp_neuron"
        )
    if big_m not in BIG_M_SOURCES:
        raise InputError(f"big_m must be one of {', '.join(BIG_M_SOURCES)}, got {big_m!r}")
    if isinstance(max_binaries, bool) or not isinstance(max_binaries, (int, np.integer)) \
            or max_binaries < 0:
        raise InputError(f"max_binaries must be a non-negative integer, got {max_binaries!r}")
    return p


def estimate_binaries(mb: MilpBounds, q: float) -> tuple[int, int]:
    """(unstable neurons, sign binaries) the MILP will need with bounds ``mb`` (an upper bound
    on the sign binaries for q = inf, where candidate pairs are pruned further)."""
    la0, ua0 = mb.gradient
    mixed = int(np.sum((la0 < 0) & (ua0 > 0)))
    signs = mixed if q == 1.0 else int(np.sum(ua0 > 0) + np.sum(la0 < 0))
    return mb.n_unstable(), signs


def _row_bounds(gm: GraphMLP, graph, C: Tensor, domain, x1: Tensor, eps: float, p: float,
                data_range, big_m: str) -> list[MilpBounds]:
    """The bounds each row's MILP will use (interval, intersected with CROWN for 'crown')."""
    ball = make_ball(gm.mlp, x1, eps, p, data_range)
    rows = [C[s].detach().cpu().to(torch.float64).numpy() for s in range(C.shape[0])]
    base = [interval_milp_bounds(gm.mlp, ball, c) for c in rows]
    if big_m == "interval":
        return base
    eng = engine_milp_bounds(graph, gm, C.to(domain.center.dtype), domain, dual_norm(p), "crown")
    return [intersect_forward(gm.mlp, ball, c, b, e) for c, b, e in zip(rows, base, eng)]


def _autograd_norms(model: nn.Module, gm: GraphMLP, W: Tensor, C: Tensor, q: float) -> Tensor:
    """||grad (C_s . f)(W[s])||_q by autograd on a float64 copy of the model ([S])."""
    try:
        m64 = copy.deepcopy(model).double().eval()
    except Exception:  # a model that cannot be copied: the same function read off its graph
        m64 = gm.mlp.to_sequential()
    X = W.detach().to(torch.float64).clone().requires_grad_(True)
    with torch.enable_grad():
        y = m64(X)
        obj = (y * C.to(torch.float64)).sum()
        (g,) = torch.autograd.grad(obj, X)
    return torch.linalg.vector_norm(g.flatten(1), ord=q, dim=1)


def exact_local_lipschitz(model: nn.Module, x: Any, eps: float, norm: float | int | str = math.inf,
                          spec: Any = None, timeout: float | None = None,
                          data_range: tuple[Any, Any] | None = None, big_m: str = "crown",
                          max_binaries: int = DEFAULT_MAX_BINARIES,
                          dtype: torch.dtype = torch.float64,
                          progress: bool = False) -> LipschitzResult:
    """Exact local Lipschitz constants of the rows of C f by one MILP per row (HiGHS).

    model: eval-mode ReLU/LeakyReLU network that traces to a fully connected chain; x: [*in]
    or [1, *in]; norm: inf or 1 (the input norm; the gradient is measured in its dual);
    timeout: seconds for all rows together (None: no limit; each row gets an even share of
    what is left, plus set-up time); big_m: "crown" or "interval";
    max_binaries: cap on the estimated binaries per row (ProblemTooLargeError above it);
    dtype: precision of the CROWN bound computation (widened for it); the MILP's network,
    centre and spec rows are always float64.
    Returns a LipschitzResult with method "exact" and status "certified" or "timeout".
    """
    start = time.perf_counter()
    model = resolve_model(model)
    tlimit = check_timeout(timeout)
    p = _check_options(norm, big_m, max_binaries)
    eps = check_eps(eps)
    dtype = check_dtype(dtype)
    x = as_tensor(x)
    x1 = batched_input(model, x)
    f64 = torch.float64  # the MILP's network, centre and spec rows are always float64
    domain = make_domain(x1.to(dtype), eps, p, data_range)
    graph = get_graph(model, x1, f64, x.device)
    gm = mlp_from_graph(graph)
    C = spec_matrix(spec, graph[graph.output].shape[0], f64, x.device)
    x1 = x1.to(f64)
    if dtype != f64:  # the CROWN bounds in the requested precision (widened for it)
        graph = get_graph(model, x1, dtype, x.device)
    q = dual_norm(p)
    t_b = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below
        row_bounds = _row_bounds(gm, graph, C, domain, x1, eps, p, data_range, big_m)
    for mb in row_bounds:  # overflowed big-M constants: refuse before the MILP
        for lo, hi in (*mb.preact, *mb.backward, mb.gradient):
            check_finite_result(lo, hi, "the MILP's big-M bounds", eps)
    bounds_time = time.perf_counter() - t_b
    est = [estimate_binaries(mb, q) for mb in row_bounds]
    worst = max(est, key=sum)
    if sum(worst) > max_binaries:
        raise ProblemTooLargeError(
            f"method 'exact' would need up to {sum(worst)} binaries per MILP ({worst[0]} "
            f"unstable neurons + {worst[1]} gradient-sign binaries), above max_binaries="
            f"{max_binaries}; pass a larger max_binaries= to raise the cap (solve time grows "
            "exponentially with it) or use method='bab' / 'alpha-crown'"
        )
    deadline = None if tlimit is None else start + tlimit
    results = []
    S = C.shape[0]
    for s in bar(range(S), progress=progress, desc="exact MILP", unit="row"):
        # an even share of what is left, so that one hard row cannot starve the others
        left = None if deadline is None else max((deadline - time.perf_counter()) / (S - s),
                                                 _MIN_ROW_TIME)
        results.append(milp_local_lipschitz(
            gm.mlp, x1, eps, p, C[s].detach().cpu(), data_range=data_range,
            timeout=left, max_binaries=max_binaries, extra_bounds=row_bounds[s]))
    return _assemble(model, gm, C, q, p, eps, tuple(x1.shape[1:]), results, big_m, bounds_time,
                     time.perf_counter() - start)


def _assemble(model: nn.Module, gm: GraphMLP, C: Tensor, q: float, p: float, eps: float,
              in_shape: tuple[int, ...], results: list, big_m: str, bounds_time: float,
              elapsed: float) -> LipschitzResult:
    """One LipschitzResult from the per-row MILP results; lower re-evaluated by autograd."""
    W = torch.stack([r.witness.reshape(-1) for r in results]).reshape(len(results), *in_shape)
    lower = _autograd_norms(model, gm, W, C, q)
    upper = torch.tensor([r.upper for r in results], dtype=torch.float64)
    for s, r in enumerate(results):
        lo = float(lower[s])
        if lo > r.upper * (1 + 1e-6) + 1e-9:
            raise SolverError(
                f"row {s}: the gradient norm {lo:.10g} at the MILP witness exceeds the MILP's "
                f"dual bound {r.upper:.10g}; the solver result is inconsistent"
            )
        upper[s] = max(float(upper[s]), lo)
    status = "certified" if all(r.status == "optimal" for r in results) else "timeout"
    details = {
        "big_m": big_m,
        "bounds_time": bounds_time,
        "rows": [{"status": r.status, "upper": r.upper, "lower_pattern": r.lower,
                  "n_binaries": r.n_binaries, "n_unstable": r.n_unstable,
                  "stable_per_layer": r.details["stable_per_layer"],
                  "mip_nodes": r.details["mip_nodes"], "solver_time": r.details["solver_time"]}
                 for r in results],
        "n_binaries": max(r.n_binaries for r in results),
    }
    return LipschitzResult(upper, lower.detach(), W.to(torch.float64), "exact", p, eps, status,
                           elapsed, details)
