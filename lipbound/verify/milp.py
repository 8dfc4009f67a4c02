"""The MILP stage of ``verify``: on a ReLU / LeakyReLU MLP whose bounds leave few neurons
unstable, one mixed-integer program per region either refutes every open disjunct or finds a
counterexample candidate (what branch and bound may take far longer to do, or never do).

The program (HiGHS through cvxpy), for the box X of a region and its open disjuncts k (each a
conjunction of rows C_kj y <= d_kj):

- the network on X with one binary per neuron that alpha-CROWN's bounds leave unstable and
  the big-M ReLU of :func:`lipbound.exact.milp_encoding.encode_forward` (those bounds, sound
  with their rounding, widened by ``WIDEN_REL``, are the big-M constants);
- t_k >= C_kj y - d_kj for every row j of disjunct k, t_k <= (CROWN upper bound of t_k);
- s >= t_k - M_k (1 - b_k) with one selection binary b_k per disjunct, sum_k b_k = 1 and
  M_k = (upper bound of t_k) - (lower bound of min_k t_k), so that min s = min_x min_k max_j
  (C_kj y - d_kj): x is a counterexample exactly when that value is <= 0 at x.

HiGHS minimises s with a cutoff ``objective_bound`` = margin > 0 (nodes whose relaxation
reaches the margin are pruned) and a target ``objective_target`` = 0 (it stops at the first
solution with s <= 0). Outcomes:

- infeasible: no input of X has s < margin, so no counterexample: every open disjunct is
  refuted. This is HiGHS's verdict up to its feasibility tolerances (1e-9), as for method
  "exact": a node that holds a true counterexample (s <= 0) is pruned only if the solver's LP
  bound errs by more than the margin (``MARGIN_REL`` of the output scale);
- a solution with s <= 0: its input is a candidate, which ``verify`` re-checks on the
  executor before reporting it (:func:`lipbound.verify.falsify.screen`);
- otherwise, HiGHS's lower bound on min s (its MIP dual bound) above the margin also refutes
  every open disjunct (a small program that presolve or the root LP settles may ignore the
  cutoff and report its optimum); anything else is undecided.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch
from torch import Tensor, nn

from lipbound.bab.split_points import undecided_kinks
from lipbound.bounds.domains import make_domain
from lipbound.errors import SolverError, UnsupportedModelError
from lipbound.exact.bounds import widen
from lipbound.exact.domain import UNSTABLE, stability
from lipbound.exact.from_graph import GraphMLP, mlp_from_graph
from lipbound.exact.milp import solve_with_highs
from lipbound.exact.milp_encoding import MilpModel, encode_forward
from lipbound.inputs import get_graph
from lipbound.io.vnnlib import InputRegion, stack_conjunctions
from lipbound.propagate.crown import crown_upper
from lipbound.propagate.driver import prepare_state
from lipbound.verify.falsify import model_dtype, snap_box
from lipbound.verify.prove import box_as_ball

#: the stage runs only where alpha-CROWN leaves at most this many neurons unstable on the box
#: (one binary each; the MILP's time grows exponentially with them)
MAX_UNSTABLE = 200
#: ... and only where plain CROWN leaves at most this multiple of it (alpha-CROWN on a wide
#: net costs seconds: 4-6 s on mnistfc 256x6, where even it leaves 800-1400 unstable)
PRECHECK_FACTOR = 2.0
#: alpha-CROWN steps for the intermediate bounds (the big-M constants)
FORWARD_ITERATIONS = 20
#: the cutoff margin, relative to the largest |bound| of the disjuncts' rows
MARGIN_REL = 1e-6
#: HiGHS stops at the first solution with s <= TARGET (0: a counterexample candidate)
TARGET = 0.0


@dataclass(frozen=True)
class MilpOutcome:
    """``refuted``: every open disjunct refuted; ``point`` [n]: a candidate input (s <= 0 in
    the MILP, unchecked) or None; ``why``: what happened, for the stage log."""

    refuted: bool
    point: Tensor | None
    why: str
    unstable: int = -1


@dataclass(frozen=True)
class Prepared:
    """A region's bounds for its MILP (:func:`prepare`): the MLP, alpha-CROWN's state on the
    box, the widened pre-activation bounds, each neuron's stability and the unstable ones."""

    gm: GraphMLP
    output: str
    state: object
    pre: list
    status: list
    unstable: list

    @property
    def count(self) -> int:
        return int(sum(u.size for u in self.unstable))


def prepare(model: nn.Module, region: InputRegion, in_shape: tuple[int, ...]
            ) -> Prepared | MilpOutcome:
    """The region's :class:`Prepared` bounds, or a :class:`MilpOutcome` saying why the MILP
    does not apply (not a ReLU / LeakyReLU MLP, too many unstable neurons)."""
    x0, eps, (lo, up) = box_as_ball(region, in_shape)
    x1 = x0.reshape(1, *in_shape).to(torch.float64)
    graph = get_graph(model, x1, torch.float64, x1.device)
    try:
        gm = mlp_from_graph(graph, "the MILP stage", "branch and bound")
    except UnsupportedModelError:
        return MilpOutcome(False, None, "not a ReLU / LeakyReLU MLP")
    dom = make_domain(x1, eps, math.inf, (lo.reshape(1, *in_shape), up.reshape(1, *in_shape)))
    with torch.no_grad():
        n_crown = undecided_kinks(graph, prepare_state(graph, dom, "crown").bounds)  # cheap
        if n_crown > PRECHECK_FACTOR * MAX_UNSTABLE:
            return MilpOutcome(False, None, f"{n_crown} unstable neurons under CROWN "
                               "(> PRECHECK_FACTOR * MAX_UNSTABLE)", n_crown)
        state = prepare_state(graph, dom, "crown", iterations=FORWARD_ITERATIONS)
    pre = [_flat(state.interval(z)) for z in gm.preact_nodes]
    status = stability(pre)
    prep = Prepared(gm, graph.output, state, pre, status,
                    [np.flatnonzero(s == UNSTABLE) for s in status])
    if prep.count > MAX_UNSTABLE:
        return MilpOutcome(False, None, f"{prep.count} unstable neurons (> MAX_UNSTABLE)",
                           prep.count)
    return prep


def solve(prep: Prepared, model: nn.Module, region: InputRegion, ids: list[int],
          seconds: float) -> MilpOutcome:
    """The MILP of the module doc on the open disjuncts ``ids`` within about ``seconds``
    (set-up included; HiGHS gets what is left)."""
    start = time.perf_counter()
    if any(region.disjuncts[i].C.shape[0] == 0 for i in ids):  # every output is unsafe there
        return MilpOutcome(False, None, "a disjunct without rows", prep.count)
    with torch.no_grad():
        rows = _row_bounds(prep.state, prep.output, region, ids)
    prob, x, scale = _program(prep.gm, region, ids, prep.pre, prep.status, prep.unstable, rows)
    left = seconds - (time.perf_counter() - start)
    if left <= 0.1:
        return MilpOutcome(False, None, "no time left after the set-up", prep.count)
    out = _solve(prob, x, left, MARGIN_REL * scale, prep.count)
    if out.point is None:
        return out
    box = snap_box(region.lower, region.upper, model_dtype(model))  # the executor's numbers
    point = out.point if box is None else out.point.to(box[0].dtype).clamp(*box)
    return MilpOutcome(False, point.to(torch.float64), out.why, prep.count)


def milp_region(model: nn.Module, region: InputRegion, ids: list[int],
                in_shape: tuple[int, ...], seconds: float) -> MilpOutcome:
    """:func:`prepare` then :func:`solve` within about ``seconds`` in all."""
    start = time.perf_counter()
    prep = prepare(model, region, in_shape)
    if isinstance(prep, MilpOutcome):
        return prep
    return solve(prep, model, region, ids, seconds - (time.perf_counter() - start))


def _flat(iv) -> tuple[np.ndarray, np.ndarray]:
    """A node's bounds [1, *shape] as flat float64 arrays, widened outward (big-M constants)."""
    return widen(iv.lower.reshape(-1).double().cpu().numpy(),
                 iv.upper.reshape(-1).double().cpu().numpy())


def _row_bounds(state, output: str, region: InputRegion, ids: list[int]):
    """(C [M, K], d [M], owner [M] in 0..len(ids)-1, sound lower / upper of C y - d [M])."""
    C, d, owner = stack_conjunctions([region.disjuncts[i] for i in ids])
    C, d = C.to(torch.float64), d.to(torch.float64)
    ub = crown_upper(state, output, torch.cat([C, -C])[None])[0]
    M = C.shape[0]
    return C.numpy(), d.numpy(), owner.numpy(), (-ub[M:] - d).numpy(), (ub[:M] - d).numpy()


def _program(gm: GraphMLP, region: InputRegion, ids: list[int], pre, status, unstable, rows):
    """(cvxpy problem minimising s, the input variable, the output scale for the margin)."""
    C, d, owner, rlo, rup = rows
    K = len(ids)
    tlo, tup = widen(np.array([rlo[owner == k].max() for k in range(K)]),
                     np.array([rup[owner == k].max() for k in range(K)]))  # rounding of "- d"
    x = cp.Variable(gm.mlp.in_features, name="x")
    model = MilpModel(x, [x >= region.lower.double().numpy(), x <= region.upper.double().numpy()])
    h = encode_forward(model, gm.mlp, pre, status, unstable)
    y = gm.mlp.weights[-1] @ h + gm.mlp.biases[-1]
    t = cp.Variable(K, name="t")
    model.cons += [t[owner] >= C @ y - d, t <= tup]
    if K == 1:
        s = t[0]
    else:
        s = cp.Variable(name="s")
        b = cp.Variable(K, boolean=True, name="b")
        model.cons += [s >= t - cp.multiply(tup - tlo.min(), 1 - b), cp.sum(b) == 1]
    scale = 1.0 + float(np.max(np.abs(np.concatenate([rlo, rup]))))
    return cp.Problem(cp.Minimize(s), model.cons), x, scale


def _solve(prob: cp.Problem, x: cp.Variable, seconds: float, margin: float,
           n_unstable: int) -> MilpOutcome:
    opts = {"time_limit": seconds, "objective_bound": margin, "objective_target": TARGET,
            "threads": 1}
    try:
        solve_with_highs(prob, opts, "the verification MILP")
    except SolverError as exc:
        return MilpOutcome(False, None, str(exc), n_unstable)
    if prob.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        return MilpOutcome(True, None, "refuted: no input below the cutoff", n_unstable)
    value = prob.value if _has_solution(prob) else None
    if x.value is not None and value is not None and np.isfinite(value) and value <= 0:
        point = torch.from_numpy(np.asarray(x.value, dtype=np.float64).copy())
        return MilpOutcome(False, point, f"candidate (s = {value:.3g})", n_unstable)
    bound = _dual_bound(prob)
    if bound > margin:
        return MilpOutcome(True, None, f"refuted: min s >= {bound:.3g}", n_unstable)
    return MilpOutcome(False, None, f"undecided ({prob.status})", n_unstable)


def _has_solution(prob: cp.Problem) -> bool:
    """Whether HiGHS returned a feasible primal solution (at a time limit without one, cvxpy
    still fills the variables, with zeros)."""
    info = prob.solver_stats.extra_stats if prob.solver_stats is not None else None
    return info is not None and getattr(info, "primal_solution_status", 0) == 2


def _dual_bound(prob: cp.Problem) -> float:
    """HiGHS's lower bound on min s (its MIP dual bound; for a problem that presolve or the LP
    settled, the optimal value), or -inf when it gives none or its objective disagrees with
    cvxpy's (a sign convention this code does not expect)."""
    info = prob.solver_stats.extra_stats if prob.solver_stats is not None else None
    if info is None or prob.value is None or not np.isfinite(prob.value):
        return -math.inf
    if abs(float(prob.value) - float(info.objective_function_value)) > 1e-6 * (
            1 + abs(float(prob.value))):
        return -math.inf
    mdb = float(getattr(info, "mip_dual_bound", math.nan))
    if math.isfinite(mdb):
        return mdb
    return float(prob.value) if prob.status == cp.OPTIMAL else -math.inf
