"""The exact extremes of one partial derivative of a ReLU / LeakyReLU MLP over a box (a MILP).

For the spec row c, the input coordinate j and a sign s (+1 or -1), with the network notation
of :mod:`lipbound.exact.mlp` and its closed consistency (the pattern delta is free where
z = 0),

    m_s = min over x in B = [lo, hi] and patterns delta consistent with x of
          s * e_j . W_1^T D_1 ... W_L^T c,

so m_{+1} is the least and -m_{-1} the greatest chain-rule derivative d (c . f) / d x_j on the
box. Every Clarke derivative lies between them (a Clarke gradient is a convex combination of
the gradients of patterns consistent with its point, and the objective is linear in each
pattern's gradient). Encoding: the forward and backward passes of
:mod:`lipbound.exact.milp_encoding` (one binary per unstable neuron, shared by both) and the
linear objective; no sign binaries. HiGHS maximises -s * g_j.

Guarantees of :meth:`DerivativeMilp.solve`:

* ``lower``: HiGHS' dual bound, widened outward for its 1e-9 tolerances like the Lipschitz
  MILP's (:mod:`lipbound.exact.milp`), never the primal value: s * g_j >= lower for every
  chain-rule derivative on B. It relies on sound big-M bounds (interval arithmetic, intersected
  with the caller's ``extra_bounds``, e.g. CROWN's on the joint graph in
  :func:`engine_derivative_milp`); a ``cut`` is the caller's certified lower bound of s * g_j.
  With ``margin`` > 0 it is -inf (that problem leaves out thin regions).
* ``witness``: a point of B strictly inside the open region of one activation pattern
  (its LP depth ``depth`` > 0 and every pre-activation on its side in float64), so f is
  affine near it with d (c . f) / d x_j = s * ``attained``. It comes from the solver's
  pattern; with ``margin`` > 0 every pre-activation of the solution is at least ``margin``
  from its kink, which finds a full-dimensional region where the closed optimum is a
  degenerate point (kinks meeting). Callers re-verify it (autograd, finite differences).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch
from torch import Tensor

from lipbound.bounds.domains import LpBall
from lipbound.errors import InputError, ShapeError
from lipbound.exact.bounds import MilpBounds, intersect_forward, interval_milp_bounds
from lipbound.exact.domain import (
    ACTIVE,
    UNSTABLE,
    RegionLP,
    make_ball,
    realize_pattern,
    stability,
)
from lipbound.exact.engine_bounds import engine_milp_bounds
from lipbound.exact.from_graph import mlp_from_graph
from lipbound.exact.milp import _certified_upper, _check_extra, _solve
from lipbound.exact.milp_encoding import encode_backward, encode_forward, encode_input
from lipbound.exact.mlp import MLP, as_mlp
from lipbound.graph.ir import Graph

#: pre-activation distance from the kinks (relative to the largest pre-activation range)
#: of the witness re-solve; regions thinner than that are not searched
WITNESS_MARGIN = 1e-6


@dataclass(frozen=True, eq=False)
class DerivativeBound:
    """One solve of :class:`DerivativeMilp` for (``feature``, ``sign``): see the module doc.

    ``lower``: certified lower bound of sign * d (c . f) / d x_feature on the box (-inf with a
    margin); ``attained`` / ``witness`` [n] / ``depth``: the value at a verified interior point
    and its LP depth (None where no pattern was realised strictly inside its region);
    ``status``: "optimal", "timeout" or "target" (stopped at a solution below ``target``)."""

    feature: int
    sign: int
    lower: float
    attained: float | None
    witness: np.ndarray | None
    depth: float
    status: str
    margin: float
    n_binaries: int
    solve_time: float


class DerivativeMilp:
    """The MILP of one network, box [lo, hi] and spec row c, solved per (feature, sign).

    The big-M bounds (interval arithmetic over the box, intersected with the sound
    ``extra_bounds`` if given) are computed once: they do not depend on the feature."""

    def __init__(self, mlp, lo, hi, c=None, extra_bounds: MilpBounds | None = None):
        self.mlp: MLP = as_mlp(mlp)
        lo = np.asarray(lo, dtype=np.float64).reshape(-1)
        hi = np.asarray(hi, dtype=np.float64).reshape(-1)
        if lo.shape != hi.shape or lo.size != self.mlp.in_features:
            raise ShapeError(f"the box has {lo.size} / {hi.size} elements, the network "
                             f"expects {self.mlp.in_features}")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo <= hi)):
            raise InputError("the box must be finite with lo <= hi")
        # a radius a little above the largest half-width: the ball's box is exactly [lo, hi]
        eps = float(np.max((hi - lo) / 2)) * (1 + 1e-12) + 1e-300
        self.ball = make_ball(self.mlp, (lo + hi) / 2, eps, math.inf, (lo, hi))
        self.c = self.mlp.spec_row(c)
        mb = interval_milp_bounds(self.mlp, self.ball, self.c)
        if extra_bounds is not None:
            mb = intersect_forward(self.mlp, self.ball, self.c, mb,
                                   _check_extra(self.mlp, extra_bounds))
        self.bounds = mb
        self.status = stability(list(mb.preact))
        self.unstable = [np.flatnonzero(s == UNSTABLE) for s in self.status]
        scale = max((float(np.max(u - lo_)) for lo_, u in mb.preact if lo_.size), default=1.0)
        self.witness_margin = WITNESS_MARGIN * max(scale, 1e-300)

    def solve(self, feature: int, sign: int, *, cut: float = -math.inf,
              timeout: float | None = None, margin: float = 0.0, target: float | None = None,
              rel_gap: float = 1e-9) -> DerivativeBound:
        """min of sign * d (c . f) / d x_feature over the box (see the module doc);
        ``timeout``: HiGHS' time limit in seconds (None: none); ``target``: stop at the first
        solution with sign * g <= target (status "target"; ``lower`` is then the dual bound
        reached so far, certified but not exact)."""
        t0 = time.perf_counter()
        if sign not in (1, -1) or not 0 <= feature < self.mlp.in_features:
            raise InputError(f"need sign +-1 and a feature in 0..{self.mlp.in_features - 1}")
        la0, ua0 = self.bounds.gradient
        base = max(float(la0[feature] if sign > 0 else -ua0[feature]), cut)
        n_bin = int(sum(u.size for u in self.unstable))
        if n_bin == 0:  # one pattern on the whole box: the bounds are its value
            pat = tuple(s == ACTIVE for s in self.status)
            v = sign * float(self.mlp.gradient_for_pattern(pat, self.c)[feature])
            x, depth = self._interior(pat)
            return DerivativeBound(feature, sign, min(base, v) if margin == 0 else -math.inf,
                                   v if x is not None else None, x, depth, "optimal", margin, 0,
                                   time.perf_counter() - t0)
        model, obj = self._problem(feature, sign, margin)
        cons = list(model.cons)
        if margin == 0 and target is None and math.isfinite(base):
            # valid (the bounds hold on the whole feasible set); not while seeking a solution
            # below a target: there it delayed HiGHS' first one 1-6x (penalty-trained net)
            cons.append(obj <= -base)
        prob = cp.Problem(cp.Maximize(obj), cons)
        extra = None if target is None else {"objective_target": float(target)}
        status, info, _ = _solve(prob, rel_gap, timeout, None, False, extra)
        primal, upper = _certified_upper(prob, info, True, status)
        if status == "timeout" and target is not None and primal is not None \
                and -primal <= target:
            status = "target"
        lower = max(-upper, base) if margin == 0 else -math.inf
        val, x, depth = None, None, -math.inf
        if primal is not None and model.x.value is not None:
            pat = self._pattern(model)
            x, depth = self._interior(pat)
            if x is not None:
                val = sign * float(self.mlp.gradient_for_pattern(pat, self.c)[feature])
        return DerivativeBound(feature, sign, lower, val, x, depth, status, margin, n_bin,
                               time.perf_counter() - t0)

    def _problem(self, feature: int, sign: int, margin: float):
        """The cvxpy model and the objective -sign * g_feature (a cvxpy expression)."""
        model = encode_input(self.mlp, self.ball)
        encode_forward(model, self.mlp, list(self.bounds.preact), self.status, self.unstable,
                       margin=margin)
        grad = encode_backward(model, self.mlp, self.c, self.status, self.bounds.backward,
                               self.unstable)
        if not isinstance(grad, cp.Expression):
            grad = cp.Constant(grad)
        # a variable, not the expression: HiGHS' objective value must not drop its constant
        obj = cp.Variable(name="obj")
        model.cons.append(obj == -sign * grad[feature])
        return model, obj

    def _pattern(self, model) -> tuple[np.ndarray, ...]:
        """The activation pattern of the solver's binaries (stable neurons by their bounds)."""
        pat = []
        for i, (d, _) in enumerate(model.switches):
            p = self.status[i] == ACTIVE
            if d is not None:
                p[self.unstable[i]] = np.asarray(d.value) > 0.5
            pat.append(p)
        return tuple(pat)

    def _interior(self, pattern) -> tuple[np.ndarray | None, float]:
        """The deepest point of B in ``pattern``'s region and its depth, if strictly inside
        (depth > 0 and every pre-activation strictly on its side in float64)."""
        real = realize_pattern(self.mlp, self.ball, pattern, RegionLP(self.ball))
        if real is None or not real.margin > 0:
            return None, -math.inf if real is None else real.margin
        zs = self.mlp.preactivations(real.x)
        if not all(np.all(np.where(p, z > 0, z < 0)) for p, z in zip(pattern, zs)):
            return None, real.margin
        return real.x, real.margin


def engine_derivative_milp(graph: Graph, c: Tensor, lo: Tensor, hi: Tensor) -> DerivativeMilp:
    """:class:`DerivativeMilp` of a traced ReLU / LeakyReLU chain (UnsupportedModelError
    otherwise) over the box [lo, hi] ([*in] each) for the spec row c [1, K], with big-M
    bounds from CROWN on the joint forward + Jacobian graph intersected with intervals."""
    gm = mlp_from_graph(graph, "the derivative MILP", "the branch-and-bound search")
    f64 = torch.float64
    lo64, hi64 = lo.to(f64)[None], hi.to(f64)[None]
    eps = ((hi64 - lo64) / 2).flatten(1).amax(1)
    domain = LpBall((lo64 + hi64) / 2, eps, math.inf, lo64, hi64)
    eng = engine_milp_bounds(graph, gm, c.to(f64), domain, math.inf, "crown")[0]
    return DerivativeMilp(gm.mlp, lo64.cpu().numpy(), hi64.cpu().numpy(),
                          c[0].detach().cpu().to(f64).numpy(), extra_bounds=eng)
