"""Branch and bound on one partial derivative over a box (the monotonicity audit's objective).

For the derivative g_j = d (c . f) / d x_j of a spec row c, the search of
:mod:`lipbound.bab.search` maximises the two rows ``[-g_j, g_j]`` over the box with two proof
goals: goal 0 "-g_j <= tol" (increasing) and goal 1 "g_j <= tol" (decreasing). A domain (a
sub-box with sign splits) is bounded by CROWN on the Clarke-Jacobian graph with its splits in
force (:class:`DerivativeSearch`: every chain-rule Clarke derivative of a point of the domain
lies in the element bounds, widened for rounding), and attained values are autograd
derivatives (float64) at box centres and LP points. A goal is *proven* when it holds on every
domain of the cover; it is *refuted* when an attained value exceeds its threshold (a
candidate witness, which the audit verifies before using it). The search stops once each goal
is proven or refuted ("decided"), at the time limit or at the domain cap; its ``upper`` is a
certified enclosure: -upper[0] <= g_j <= upper[1] on the whole box.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lipbound.bab.anytime import Anytime, BabResult
from lipbound.bab.lipschitz import make_brancher
from lipbound.bab.relu_split import LipschitzSearch, _bound_elements
from lipbound.bab.search import search
from lipbound.bounds.domains import LpBall
from lipbound.graph.ir import Graph
from lipbound.jacobian.attained import row_gradients
from lipbound.jacobian.bound import jacobian_state
from lipbound.progress import ProgressFlag
from lipbound.propagate.rounding import finish_elements

#: domains per step
BATCH = 32
#: uniform points per box (every box of a step, whole or not) whose derivatives are attained
#: (candidate witnesses)
SAMPLES = 4


class DerivativeSearch(LipschitzSearch):
    """Domains bounded on the Clarke-Jacobian graph of one spec row: ub [D, 2] bounds
    [-g_j, g_j] (see the module doc). Forward bounds: the root's alpha-optimised ones
    intersected in, CROWN per domain with the splits clamped (beta for MLPs)."""

    desc = "bab derivative"

    def __init__(self, model: nn.Module, graph: Graph, c: Tensor, box_lo: Tensor,
                 box_hi: Tensor, j: int, method: str = "crown", seed: int = 0):
        lo, hi = box_lo[None], box_hi[None]
        eps = ((hi - lo) / 2).flatten(1).amax(1)
        super().__init__(model, graph, c, LpBall((lo + hi) / 2, eps, math.inf, lo, hi),
                         math.inf)
        self.j, self.method = j, method
        self.element_rows = True  # every domain bounds its own elements
        # a wrong-signed region can be small, and box centres alone miss it: every box
        self.box_samples, self.sample_whole = SAMPLES, True
        self.gen = torch.Generator().manual_seed(seed)

    def bound(self, signs: list[Tensor], parent_ub: Tensor | None = None,
              threshold: float | None = None, boxes: tuple[Tensor, Tensor] | None = None,
              parent: tuple[list[Tensor], list[Tensor]] | None = None
              ) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
        """ub [D, 2] (-inf for empty domains), forward bounds and scores per layer [D, m]."""
        D = self.count(signs, boxes)
        known, dom = self.restriction(signs, boxes=boxes, parent=parent)
        root = self.is_root(signs, boxes)
        if root:
            self.prime_root(dom)
        with torch.no_grad():
            state, jg = jacobian_state(self.graph, self.C, dom, self.method, self.q,
                                       forward_iterations=self.forward_steps(root),
                                       bound_gradient=False,
                                       restriction=known)
            if self.method != "ibp":
                _bound_elements(state, jg)
            if root:
                self.keep_forward(state)
            g = state.interval(jg.gradient)
            lo, up = finish_elements(g.lower.reshape(D, -1), g.upper.reshape(D, -1), jg.graph,
                                     jg.gradient, dom.interval())
        ub = torch.stack([-lo[:, self.j], up[:, self.j]], 1)
        los, ups, empty = self.layer_bounds(state, D, 1)
        scores = self.jacobian_scores(state, jg, D)
        return torch.where(empty[:, None], -torch.inf, ub), los, ups, scores

    def attain(self, pts: Tensor) -> Tensor:
        G = row_gradients(self.m64, pts.to(self.dtype), self.C.to(self.dtype))  # [1, N, *in]
        gj = G.flatten(2)[0, :, self.j].to(self.C.dtype)
        return torch.stack([-gj, gj], 1)


def bab_derivative(model: nn.Module, graph: Graph, c: Tensor, lo: Tensor, hi: Tensor, j: int,
                   tol: float, *, timeout: float, split: str = "mixed", max_domains: int = 20_000,
                   batch: int = BATCH, method: str = "crown", seed: int = 0,
                   progress: ProgressFlag = False) -> BabResult:
    """Decide the sign of d (c . f) / d x_j over the box [lo, hi] ([*in] each; c [1, K]).

    ``method``: "crown" (default) or "ibp" bounds every domain; ``seed``: of the sampled
    points (:meth:`~lipbound.bab.relu_split.SignSearch.box_points`). ``res.proven`` [2]:
    (increasing: every Clarke derivative >= -tol; decreasing: every one <= tol) proven on
    the whole box; ``res.lower`` [2] / ``res.witness`` [2, *in]: the most negative / most
    positive attained derivative (negated / as is) and its point; ``res.upper`` [2]:
    -upper[0] <= d f / d x_j <= upper[1] on the box (certified).
    """
    srch = DerivativeSearch(model, graph, c, lo, hi, j, method, seed)
    srch.forward_iterations = 0  # CROWN per domain: more domains beat tighter ones here
    thr = torch.full((2,), math.nextafter(tol, math.inf), dtype=c.dtype, device=c.device)
    run = Anytime(timeout, 0.0, 0.0, max_domains, stop_below=thr,
                  groups=torch.arange(2, device=c.device), refute=True)
    centre = srch.domain.center
    L = srch.attain(centre)[0]
    W = centre.expand(2, *centre.shape[1:]).clone()
    brancher = make_brancher(split, graph, c, srch.domain)
    return search(srch, brancher, lo, hi, L, W, run, batch=batch, progress=progress)
