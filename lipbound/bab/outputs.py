"""Branch-and-bound for output bounds ``lower <= C f(x) <= upper``: the objective
:class:`OutputSearch` (the 2S rows [C; -C], every domain bounded by alpha/beta-CROWN with its
splits in force on the ball clipped to its box; plain CROWN for input halves) maximised by the
one search of :mod:`lipbound.bab.search` with any brancher ("input", "relu", "mixed").
Attained values: f at box centres (projected into the set) and LP points; domains that the LP
proves empty are dropped. ``stop_below`` lets a verifier stop as soon as a property is proven,
and the attained points (``res.witness``) are candidate counterexamples.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch
from torch import Tensor, nn

from lipbound.bab.anytime import Anytime, BabResult
from lipbound.bab.lipschitz import make_brancher
from lipbound.bab.relu_split import SignSearch
from lipbound.bab.search import search
from lipbound.bab.split_points import cotangent_magnitude
from lipbound.bounds.domains import Box, LpBall
from lipbound.errors import UnsupportedOperationError
from lipbound.graph.ir import Graph
from lipbound.jacobian.attained import model64, row_gradients
from lipbound.jacobian.bound import jacobian_state
from lipbound.progress import ProgressFlag
from lipbound.propagate.alpha import alpha_crown_upper, iterate_in
from lipbound.propagate.driver import prepare_state

#: alpha/beta-CROWN steps for the spec rows of every sign domain
OUTPUT_ITERATIONS = 20
#: alpha/beta-CROWN steps for the forward (intermediate) bounds of every sign domain below
#: the root (the root, bounded once, takes ``relu_split.FORWARD_ITERATIONS``), and the dtype
#: of the Adam iterates (they only choose parameters: every bound is a float64 pass with the
#: kept ones, :func:`~lipbound.propagate.alpha.iterate_in`). Chosen on a development family
#: of random robustness properties (experiments/bab_forward_choice.py, experiments/README.md):
#: against 20 steps in float64, 5 steps in float32 proved 23 of 40 properties instead of 21,
#: in 0.60x the time where both proved, and ended every undecided one with a larger margin;
#: 3 or 10 steps were slower. Bounding a domain with its parent's forward bounds alone (no
#: recomputation) bounded ~20x more domains a second but far looser ones: mnistfc 256x4
#: prop_0_0.03 is proved from 21 recomputed domains, and was not from 1,379 inherited ones.
CHILD_FORWARD_ITERATIONS = 5
ITERATE_DTYPE: torch.dtype | None = torch.float32
#: domains bounded per step, by brancher (fewer sign domains: alpha/beta-CROWN bounds the
#: union of the batch's unstable rows)
BATCH = {"input": 64, "relu": 32, "mixed": 32}


class OutputSearch(SignSearch):
    """Sign domains bounded on the forward graph: ub [D, 2S] >= [C; -C] f over the domain."""

    desc = "bab outputs (relu splits)"

    def __init__(self, model: nn.Module, graph: Graph, C: Tensor, domain: LpBall):
        super().__init__(graph, C, domain)
        self.CC = torch.cat([C, -C])
        self.output_iterations = OUTPUT_ITERATIONS
        self.child_forward_iterations = CHILD_FORWARD_ITERATIONS
        self.iterate_dtype = ITERATE_DTYPE
        self.m64, self.dtype = model64(model, domain.center[:1])
        self.reach = (_output_reach(self.layers, self.CC) if self.layers is not None else
                      _cotangent_reach(graph, self.CC, domain, self.names))

    def bound(self, signs: list[Tensor], parent_ub: Tensor | None = None,
              threshold: float | None = None, boxes: tuple[Tensor, Tensor] | None = None,
              parent: tuple[list[Tensor], list[Tensor]] | None = None
              ) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
        """ub [D, 2S] (-inf for empty domains), forward bounds and scores per layer [D, m]:
        the triangle area of each unstable neuron times its |W| reach to the spec rows (every
        row is recomputed: ``parent_ub`` is not needed), on the ball clipped to ``boxes`` if
        given, knowing the ``parent`` domains' forward bounds (:meth:`known_forward`)."""
        D = self.count(signs, boxes)
        known, dom = self.restriction(signs, boxes=boxes, parent=parent)
        root = self.is_root(signs, boxes)
        if root:
            self.prime_root(dom)
        t0 = time.perf_counter()
        with iterate_in(self.iterate_dtype):
            with torch.no_grad():
                state = prepare_state(self.graph, dom, "crown", known,
                                      iterations=self.forward_steps(root))
            A = self.CC.unsqueeze(0).expand(D, *self.CC.shape)
            ub = alpha_crown_upper(state, self.graph.output, A, self.output_iterations).detach()
        los, ups, empty = self.layer_bounds(state, D, 1)
        if root:
            self.keep_forward(state)
            self.child_cost = time.perf_counter() - t0
        scores = [(-lo * up).clamp_min(0) / (up - lo).clamp_min(1e-300) * r
                  for lo, up, r in zip(los, ups, self.reach)]
        return torch.where(empty[:, None], -torch.inf, ub), los, ups, scores

    def lp_objective(self, rows: Tensor, offsets: Tensor) -> tuple:
        """Row r's value is CC_r y: G = -CC[rows], g = offsets."""
        G = -self.CC[rows.to(self.CC.device)].double().cpu().numpy()
        return G, offsets.double().cpu().numpy()

    def smear(self, lo: Tensor, up: Tensor) -> Tensor:
        """Input-split scores [N, n] of boxes [N, n], ``sqrt(point * interval)`` of two
        smears (derivative magnitude times width, max over the rows of C): ``point`` with
        the autograd derivative at the box centre, ``interval`` with the largest |derivative|
        over the box (IBP on the Clarke-Jacobian graph). On ACAS Xu each alone stalls some
        property that the other decides; their geometric mean decided both (experiments/
        README.md, bench_vnncomp). A heuristic: any coordinate is a sound choice."""
        N, shape = lo.shape[0], self.domain.in_shape
        x = ((lo + up) / 2).to(self.dtype).reshape(N, *shape)
        g = row_gradients(self.m64, x, self.C.to(self.dtype)).reshape(self.C.shape[0], N, -1)
        point = g.abs().amax(0).to(lo.dtype)
        box = Box(lo.reshape(-1, *shape), up.reshape(-1, *shape))
        try:
            with torch.no_grad():
                state, jg = jacobian_state(self.graph, self.C, box, "ibp")
                iv = state.interval(jg.gradient)
        except UnsupportedOperationError:  # a step (no Clarke Jacobian): the point smear
            return torch.where(point.amax(1, keepdim=True) > 0, point, 1.0) * (up - lo)
        mag = torch.maximum(iv.lower.abs(), iv.upper.abs()).reshape(N, self.C.shape[0], -1)
        interval = torch.nan_to_num(mag, nan=0.0).amax(1)
        return (point * interval).sqrt() * (up - lo)

    def attain(self, pts: Tensor) -> Tensor:
        with torch.no_grad():
            y = self.m64(pts.to(self.dtype).reshape(pts.shape[0], *self.domain.in_shape))
        return y.reshape(pts.shape[0], -1).to(self.C.dtype) @ self.CC.t()


def _output_reach(layers, CC: Tensor) -> list[Tensor]:
    """Per hidden layer, sum over spec rows of (|CC| |W_L| ... |W_{i+1}|)_j for neuron j."""
    out, acc = [], CC.abs().sum(0)
    for L in reversed(layers[1:]):
        acc = torch.tensor(abs(L.W), dtype=CC.dtype, device=CC.device).t() @ acc
        out.append(acc)
    return out[::-1]


def _cotangent_reach(graph: Graph, CC: Tensor, domain: LpBall, names: list[str]) -> list[Tensor]:
    """Per split node (any graph), the largest interval |cotangent| of the rows CC at its
    ReLU's output over the ball (IBP on the Clarke-Jacobian graph), [m]: how much a unit
    change of the neuron's output can move the spec rows."""
    try:
        with torch.no_grad():
            state, jg = jacobian_state(graph, CC, domain, "ibp")
    except UnsupportedOperationError:  # a step (no Clarke Jacobian): every neuron alike
        return [torch.ones(graph[n].numel, dtype=CC.dtype, device=CC.device) for n in names]
    return [m[0] for m in cotangent_magnitude(state, jg, names, 1)]


def bab_output_bounds(model: nn.Module, graph: Graph, C: Tensor, domain: LpBall, *,
                      timeout: float, split: str = "input", rtol: float = 1e-4,
                      atol: float = 1e-7, batch: int | None = None, max_domains: int = 200_000,
                      stop_below: Tensor | None = None, groups: Tensor | None = None,
                      input_score: str = "smear", witness_check=None,
                      progress: ProgressFlag = "auto") -> tuple[Tensor, Tensor, BabResult]:
    """(lower [S], upper [S], search result) with lower <= C f(x) <= upper on the set.

    ``split``: "input" | "relu" | "mixed" (see :mod:`lipbound.bab.search`); ``stop_below`` /
    ``groups`` [2S] (optional): proof goals on the rows [C; -C] (see
    :class:`~lipbound.bab.anytime.Anytime`; default: every row with a finite threshold);
    ``res.proven`` says which goals hold on the whole set; ``res.witness`` [2S, *in] are the
    points of the set where each row's attained value ``res.lower`` was reached.
    ``input_score``: how input halves choose their coordinate, "smear" (derivative times
    width, :meth:`OutputSearch.smear`) or "width" (first-layer weighted width).
    With ``groups`` the search serves the goals only (``Anytime.goals_only``), and
    ``witness_check`` (see :class:`~lipbound.bab.anytime.Anytime`) may stop it with status
    "counterexample".
    """
    run = Anytime(timeout, rtol, atol, max_domains, stop_below=stop_below, groups=groups,
                  goals_only=groups is not None, witness_check=witness_check)
    srch = OutputSearch(model, graph, C, domain)
    if split in ("input", "mixed"):  # plain CROWN: input halves are many and cheap
        srch.forward_iterations, srch.output_iterations = 0, 0
    S = C.shape[0]
    center = domain.center
    L = srch.attain(center)[0]
    W = center.expand(2 * S, *center.shape[1:]).clone()
    box = domain.interval()
    brancher = make_brancher(split, graph, C, domain)
    if input_score == "smear":
        brancher = replace(brancher, input_score=srch.smear)
    res = search(srch, brancher, box.lower[0], box.upper[0], L, W, run,
                 batch=batch or BATCH[split], progress=progress)
    return -res.upper[S:], res.upper[:S], res


def bab_relu_output_bounds(model: nn.Module, graph: Graph, C: Tensor, domain: LpBall,
                           **kw) -> tuple[Tensor, Tensor, BabResult]:
    """:func:`bab_output_bounds` with sign splits (any graph with ReLU / LeakyReLU)."""
    return bab_output_bounds(model, graph, C, domain, split="relu", **kw)
