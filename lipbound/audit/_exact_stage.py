"""The monotonicity audit's MILP stage: exactness where the derivative search leaves a gap.

On a ReLU / LeakyReLU chain the search (:func:`lipbound.bab.derivative.bab_derivative`) gets
``SEARCH_SHARE`` of a feature's time; a hypothesis it leaves open (neither proven nor refuted
by a verified point) then goes to the MILP of :mod:`lipbound.exact.derivative`, whose big-M
constants are CROWN's bounds on the joint forward + Jacobian graph of the whole box and whose
cut is the search's certified bound. The MILP's minimum of sign * d f / d x_j is exact: its
certified dual bound either proves the hypothesis (>= -tol) or, below it, comes with the
solver's activation pattern, realised strictly inside its region (or, if that pattern is a
degenerate meeting of kinks, re-solved with every pre-activation away from its kink), as a
candidate witness that the audit verifies by autograd and finite differences. The solver
stops at its first solution below -max(2 tol, 1e-7) (a witness decides the hypothesis; the
enclosure then holds HiGHS' dual bound at that moment, certified but not the exact minimum).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lipbound.errors import ProblemTooLargeError, UnsupportedModelError
from lipbound.exact.derivative import DerivativeMilp, engine_derivative_milp
from lipbound.exact.milp import DEFAULT_MAX_BINARIES
from lipbound.graph.ir import Graph
from lipbound.graph.shapes import relu_chain

#: the search's share of a feature's time when the MILP stage can follow it
SEARCH_SHARE = 0.25
#: seconds the MILP needs at least to be worth starting (the witness re-solve alike)
MIN_STAGE_SECONDS = 0.5


@dataclass(frozen=True)
class StageResult:
    """The MILP stage on one hypothesis (``sign``): ``lower`` certified
    (sign * d f / d x_j >= lower on the box; -inf if the solver gave no bound);
    ``candidates`` [N, *in] points whose sign * derivative the MILP found below -tol (to be
    verified), ``depths`` [N] how far inside its linear region each lies (distance to the
    nearest kink hyperplane); ``status`` "optimal", "timeout" or "target" (the solver stopped
    at its first solution below -tol: ``lower`` is not the exact minimum); ``seconds``."""

    sign: int
    lower: float
    candidates: Tensor
    depths: Tensor
    status: str
    seconds: float

    def to_dict(self) -> dict:
        return {"sign": self.sign, "lower": self.lower, "status": self.status,
                "candidates": int(self.candidates.shape[0]), "seconds": self.seconds}


class ExactStage:
    """The derivative MILP of one network, box and spec row, built at its first use and
    shared by the features; it does not apply where the network is not a ReLU / LeakyReLU
    chain or needs more than ``max_binaries`` binaries."""

    def __init__(self, graph: Graph, spec: Tensor, lo: Tensor, hi: Tensor, tol: float,
                 max_binaries: int = DEFAULT_MAX_BINARIES):
        self.graph, self.spec, self.lo, self.hi = graph, spec, lo, hi
        self.tol, self.max_binaries = tol, max_binaries
        self._milp: DerivativeMilp | None = None
        try:
            relu_chain(graph)
            self.applies = True
        except UnsupportedModelError:
            self.applies = False

    @property
    def milp(self) -> DerivativeMilp | None:
        if self.applies and self._milp is None:
            self._milp = engine_derivative_milp(self.graph, self.spec, self.lo, self.hi)
            if sum(u.size for u in self._milp.unstable) > self.max_binaries:
                self.applies, self._milp = False, None
        return self._milp

    def decide(self, j: int, sign: int, cut: float, seconds: float) -> StageResult | None:
        """The MILP on hypothesis ``sign`` (+1: increasing, -1: decreasing) of feature j
        within ``seconds``; ``cut``: a certified lower bound of sign * d f / d x_j. None when
        the stage does not apply or there is no time for it."""
        if not self.applies or seconds < MIN_STAGE_SECONDS or self.milp is None:
            return None
        t0 = time.perf_counter()
        # the first solution below -tol stops the solver: a candidate witness decides the
        # hypothesis, so the exact minimum is not needed then
        target = -max(2 * self.tol, 1e-7)
        try:
            r = self.milp.solve(j, sign, cut=cut, timeout=seconds, target=target)
        except ProblemTooLargeError:
            return None
        pts, depths = [], []
        if r.witness is not None and r.attained < -self.tol:
            pts.append(r.witness)
            depths.append(r.depth)
        left = seconds - (time.perf_counter() - t0)
        if r.lower < -self.tol and not pts and left >= MIN_STAGE_SECONDS:
            w = self.milp.solve(j, sign, timeout=left, margin=self.milp.witness_margin,
                                target=target)
            if w.witness is not None and w.attained < -self.tol:
                pts.append(w.witness)
                depths.append(w.depth)
        cand = torch.from_numpy(np.array(pts, dtype=np.float64).reshape(len(pts),
                                                                         self.lo.numel()))
        lower = r.lower if math.isfinite(r.lower) else -math.inf
        return StageResult(sign, lower, cand.reshape(len(pts), *self.lo.shape),
                           torch.tensor(depths, dtype=torch.float64), r.status,
                           time.perf_counter() - t0)
