"""Bounding branch-and-bound domains (an input box with splits at the kinks of activations:
ReLU / LeakyReLU signs, and the kinks other ops declare, :mod:`lipbound.bab.split_points`) for
the search of :mod:`lipbound.bab.search`: :class:`SignSearch`, what every objective shares
(split points, per-domain balls and restrictions, the sign LP), and :class:`LipschitzSearch`,
the local-Lipschitz objective (output bounds: :mod:`lipbound.bab.outputs`; derivatives:
:mod:`lipbound.bab.derivative`).

Any graph whose kinks can be split works (MLPs, CNNs, residual networks); the LP feasibility
check below needs a ReLU / LeakyReLU MLP (:func:`mlp_layers`) and is off for other graphs,
whose domains are pruned only when their forward bounds cross. Below, ReLU sign splits are
described; a kink split at t (z >= t or z <= t) is a box on the node that clamps its bounds,
enters CROWN with multipliers and makes the ops reading it one-sided there.

A domain fixes the sign of some pre-activations (z_i >= 0 or z_i <= 0, closed). It is bounded
with the splits in force: the root's bounds (forward nodes and gradient elements, valid on
every sub-domain) and its parent's forward bounds (valid on the child, a subset) are
intersected in, forward bounds are clamped and re-tightened (MLPs:
alpha/beta-CROWN, with the Lagrangian terms beta_j s_j z_j >= 0 of the split constraints,
also between splits of one layer, :mod:`lipbound.propagate.alpha`; other graphs: CROWN), the
switches of split neurons take the split's derivative (the gradient norm is convex in each
switch, so the vertex patterns carry the supremum over the Clarke set), and the gradient
elements get their own CROWN bounds where that pays (:data:`ELEMENT_ROWS_MAX`). Before a
domain is split, an LP over the ball with the exact constraints of split and stable neurons
and the triangle relaxation of the others decides whether any input produces its signs; an
infeasible domain is dropped. This is what lets the search go below the maximum over all
patterns: once every neuron of a domain is fixed, its bound is the exact gradient norm of a
pattern that the LP proved feasible, so the search converges to the exact constant. Feasible
LP solutions (strictly inside the region at the leaves) give attained lower bounds. The
neuron to split is the unstable one of the earliest layer whose switch can move the gradient
most (largest |cotangent| times its |W| reach to the input, :func:`_graph_reach` off MLPs).
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor, nn

from lipbound.bab.lp import MlpLayer, sign_lp
from lipbound.bab.split_points import cotangent_magnitude, kink_boxes
from lipbound.bounds.domains import LpBall
from lipbound.bounds.interval import Interval
from lipbound.bounds.restriction import Restriction
from lipbound.errors import UnsupportedModelError
from lipbound.graph.ir import INPUT, Graph
from lipbound.graph.shapes import (
    SplitPoint,
    relu_chain,
    relu_like_only,
    relu_like_slope,
    split_points,
)
from lipbound.jacobian.attained import model64, row_gradients
from lipbound.jacobian.bound import jacobian_state, norm_upper
from lipbound.ops import registry
from lipbound.propagate.driver import prepare_state
from lipbound.propagate.ibp import evaluate_fixed
from lipbound.propagate.intermediate import crown_node_bounds


def mlp_layers(graph: Graph) -> list[MlpLayer]:
    """The layers of an MLP graph (read by :func:`lipbound.graph.shapes.relu_chain`, which
    composes affine chains); UnsupportedModelError names any other operator."""
    chain = relu_chain(graph, "split='relu'", "split='input' or methods 'crown' / 'alpha-crown'")
    names = (*chain.preact_nodes, graph.output)
    slopes = (*chain.negative_slopes, None)
    return [MlpLayer(z, W, b, k)
            for z, W, b, k in zip(names, chain.weights, chain.biases, slopes)]


def _graph_reach(graph: Graph, names: list[str], dtype: torch.dtype,
                 device: torch.device) -> list[Tensor]:
    """Per node of ``names``, its interval radius [m] over the input box [-1, 1]^n in the
    network with every ReLU / LeakyReLU replaced by the identity. Through linear operators
    the radius is |A| 1, so for affine chains this is the l1 norm of each row of the |W|
    product (:func:`_input_reach`); other operators contribute their interval images."""
    fixed = evaluate_fixed(graph)
    dep = graph.depends_on_input()
    iv: dict[str, Interval] = {}
    for n in graph.nodes:
        if not dep[n.name]:
            continue
        if n.op == INPUT:
            one = torch.ones(1, *n.shape, dtype=dtype, device=device)
            iv[n.name] = Interval(-one, one)
        elif relu_like_slope(n) is not None:
            iv[n.name] = iv[n.inputs[0]]
        else:
            args = [iv[s] if dep[s] else Interval.point(fixed[s]) for s in n.inputs]
            iv[n.name] = registry.get(n.op, n.where).ibp(n.params, *args)
    return [((iv[z].upper - iv[z].lower) / 2).flatten() for z in names]


#: a domain is empty only when some neuron's bounds cross by more than this (relative):
#: intermediate bounds are computed in floating point, and a domain whose region touches
#: z = 0 must not be dropped because rounding pushed a bound across it
EMPTY_RTOL = 1e-9
#: alpha/beta-CROWN steps for the forward bounds of every domain (beta: split multipliers)
FORWARD_ITERATIONS = 20
#: ... at most this many below the root (the output search has its own, fewer:
#: :data:`lipbound.bab.outputs.CHILD_FORWARD_ITERATIONS`)
CHILD_FORWARD_ITERATIONS = 20
#: LPs run while they have taken at most this share of the search's time so far: slow LPs
#: (a loaded machine, wide layers) are rationed, never switched off for the rest of the search
LP_TIME_SHARE = 0.5


def _input_reach(layers: list[MlpLayer], C: Tensor) -> list[Tensor]:
    """Per hidden layer i, ||(|W_1|^T ... |W_i|^T) e_j||_1 for each neuron j: a bound on how
    far a unit change of neuron j's switch output moves the input gradient."""
    out, acc = [], None
    for L in layers[:-1]:
        W = torch.tensor(L.W, dtype=C.dtype, device=C.device).abs()
        acc = W.sum(1) if acc is None else W @ acc  # [m]: |W_i| reach of layer i's rows
        out.append(acc * (1.0 - (L.k or 0.0)))
    return out


def _rows_to_bound(parent_ub: Tensor | None, threshold: float | None) -> Tensor | None:
    """Spec rows [S'] whose parent bound reaches ``threshold`` somewhere in the batch (at
    least the largest one), or None for all rows."""
    if parent_ub is None or threshold is None:
        return None
    need = (parent_ub >= threshold).any(0)
    need[parent_ub.max(0).values.argmax()] = True
    return None if bool(need.all()) else need.nonzero().flatten()


def sub_balls(domain: LpBall, lo: Tensor, up: Tensor) -> LpBall:
    """The input set ∩ each box [lo[n], up[n]] ([N, *in]) as a batch of N clipped balls."""
    N = lo.shape[0]
    idx = torch.zeros(N, dtype=torch.long, device=lo.device)
    return LpBall(domain.center[idx], domain.eps[idx], domain.p, lo, up)


class SignSearch:
    """What every sign-splitting search shares: the split nodes (pre-activations), the input
    box, the LP check (MLPs: ``layers``; None for other graphs, where the LP is off) and the
    per-layer bounds of a propagation. Subclasses define :meth:`bound` (ub [D, R], forward
    bounds and branching scores per layer [D, m]) and :meth:`attain` (values [N, R] at
    points of the set)."""

    desc = "bab (relu splits)"
    #: a domain with every neuron fixed is bounded exactly (it leaves the queue)
    final_when_fixed = False

    def __init__(self, graph: Graph, C: Tensor, domain: LpBall):
        try:
            self.layers: list[MlpLayer] | None = mlp_layers(graph)
            self.points = [SplitPoint(L.z, 0.0, True) for L in self.layers[:-1]]
        except UnsupportedModelError:
            self.layers = None
            try:
                self.points = split_points(graph)
            except UnsupportedModelError:  # nothing to split: input halves only
                self.points = []
        #: the node each split variable family splits (one entry per :attr:`points` entry:
        #: a node with several kinks appears once per kink)
        self.names = [sp.node for sp in self.points]
        self.widths = [graph[n].numel for n in self.names]
        self.graph, self.C, self.domain = graph, C, domain
        self.lp_enabled = self.layers is not None
        self.lp_seconds = 0.0  # time spent in LPs so far
        self.root_forward: dict[str, Interval] = {}  # forward bounds [1, *shape] on the ball
        self.child_cost: float | None = None  # seconds to bound one child, set at the root
        self.forward_iterations = FORWARD_ITERATIONS
        self.child_forward_iterations = CHILD_FORWARD_ITERATIONS
        box = domain.interval()
        self.blo = box.lower[0].flatten().double().cpu().numpy()
        self.bhi = box.upper[0].flatten().double().cpu().numpy()
        self.whole_width = (box.upper - box.lower).reshape(1, -1)  # the input box's widths
        self.box_samples = 0  # uniform points attained per box (:meth:`box_points`) ...
        self.sample_whole = False  # ... also in boxes that are the whole input box
        self.gen = torch.Generator().manual_seed(0)

    def forward_steps(self, root: bool = True) -> int:
        """alpha/beta-CROWN steps for a domain's forward bounds (the root's, or below it, at
        most ``child_forward_iterations``): MLPs re-optimise them per domain; other graphs
        (convolutions: costly per step) use CROWN with the root's optimised bounds
        (:meth:`prime_root`) and the split clamps."""
        steps = self.forward_iterations if self.layers is not None else 0
        return steps if root else min(steps, self.child_forward_iterations)

    def prime_root(self, domain: LpBall) -> None:
        """When domains do not optimise their forward bounds (:meth:`forward_steps` is 0):
        the whole ball's alpha-optimised forward bounds (as method "crown" computes them),
        kept in ``root_forward`` before the root is bounded, so the root's own bound costs
        what a child's does (the estimate of a step's duration)."""
        if self.forward_steps() > 0:
            return
        it = self.forward_iterations if relu_like_only(self.graph) else 0
        with torch.no_grad():
            state = prepare_state(self.graph, domain, "crown", iterations=it)
        self.keep_forward(state)

    def box_points(self, lo: Tensor, up: Tensor) -> Tensor:
        """``box_samples`` uniform points [M * box_samples, n] of each of the M boxes of
        ``lo``, ``up`` [N, n] narrower than the whole input box (every box with
        ``sample_whole``), seeded by ``gen``. Sign domains on the whole box (brancher "relu")
        get none by default: they would only repeat the root's samples of the whole set (at
        a few per cent of a step: 0.12 s for 512 points on mnistfc 256x2)."""
        if not self.sample_whole:
            narrow = (up - lo < self.whole_width.to(lo.dtype)).any(1)
            lo, up = lo[narrow], up[narrow]
        u = torch.rand(lo.shape[0], self.box_samples, lo.shape[1], generator=self.gen,
                       dtype=lo.dtype).to(lo.device)
        return (lo[:, None] + u * (up - lo)[:, None]).reshape(-1, lo.shape[1])

    def is_root(self, signs: list[Tensor], boxes: tuple[Tensor, Tensor] | None) -> bool:
        """One domain without splits on the whole ball's box: its bounds hold on every
        domain (called once, before any other)."""
        if boxes is not None and boxes[0].shape[0] != 1:
            return False
        if signs and (signs[0].shape[0] != 1 or any(bool(s.any()) for s in signs)):
            return False
        return not self.root_forward

    def keep_forward(self, state) -> None:
        """Keep the root's forward bounds: valid on every sub-domain, they are intersected
        into every later domain's."""
        self.root_forward = {n.name: state.bounds[n.name] for n in self.graph.nodes
                             if n.name in state.bounds}

    def splits(self, signs: list[Tensor], boxes: tuple[Tensor, Tensor] | None = None
               ) -> tuple[dict[str, Tensor], LpBall]:
        """The sign splits (at 0, of ReLU-like inputs) by node name and the domains: the ball
        repeated D times, or the ball clipped to each box of ``boxes`` (lo, up [D, n], flat;
        kink splits: :meth:`restriction`)."""
        D = self.count(signs, boxes)
        if boxes is not None:
            shape = self.domain.in_shape
            dom = sub_balls(self.domain, boxes[0].reshape(D, *shape),
                            boxes[1].reshape(D, *shape))
        else:
            dom = self.domain.select(torch.zeros(D, dtype=torch.long, device=self.C.device))
        splits = {sp.node: s.reshape(D, *self.graph[sp.node].shape)
                  for sp, s in zip(self.points, signs) if sp.sign}
        return splits, dom

    @staticmethod
    def count(signs: list[Tensor], boxes: tuple[Tensor, Tensor] | None) -> int:
        """The number of domains D given by their input boxes or, without boxes, their signs."""
        return boxes[0].shape[0] if boxes is not None else signs[0].shape[0]

    def project(self, pts: Tensor) -> Tensor:
        """Points [N, *in] of the ball's box mapped into the ball (l_2 / l_1)."""
        return self.domain.project(pts)

    def restriction(self, signs: list[Tensor], gradient: Interval | None = None,
                    boxes: tuple[Tensor, Tensor] | None = None,
                    parent: tuple[list[Tensor], list[Tensor]] | None = None
                    ) -> tuple[Restriction, LpBall]:
        """Everything a domain's bound may assume (its sign and kink splits, the root's
        forward bounds or, given ``parent``, the parents' (:meth:`known_forward`), known
        gradient bounds) and the domains (see :meth:`splits`; ``boxes`` are input boxes,
        the kink splits' boxes on inner nodes come from ``signs``)."""
        splits, dom = self.splits(signs, boxes)
        kinks = kink_boxes(self.graph, self.points, signs, self.C.dtype) if signs else {}
        return Restriction(splits, self.known_forward(parent), gradient, kinks), dom

    def known_forward(self, parent: tuple[list[Tensor], list[Tensor]] | None
                      ) -> dict[str, Interval]:
        """The forward bounds every domain of a batch may assume: the root's, intersected
        with each domain's parent's bounds at the split points (``parent``: per split point,
        lo / up [D, m] relative to its kink, as :meth:`layer_bounds` gives them). A child
        is a subset of its parent, so the parent's bounds hold on it. Only kinks at 0 are
        taken (there the relative bounds are the node's own, with no rounding in between)."""
        known = dict(self.root_forward)
        if parent is None:
            return known
        for sp, lo, up in zip(self.points, *parent):
            if sp.point != 0.0 or sp.node not in known:
                continue
            root, shape = known[sp.node], self.graph[sp.node].shape
            lo, up = lo.reshape(-1, *shape), up.reshape(-1, *shape)
            known[sp.node] = Interval(torch.maximum(root.lower, lo), torch.minimum(root.upper, up))
        return known

    def layer_bounds(self, state, D: int, stride: int) -> tuple[list[Tensor], list[Tensor],
                                                               Tensor]:
        """Forward bounds per layer [D, m] (domain d at state row d * stride) and a mask [D]
        of domains whose bounds crossed (no input produces their signs)."""
        rows = torch.arange(D, device=self.C.device) * stride
        los, ups = [], []
        empty = torch.zeros(D, dtype=torch.bool, device=self.C.device)
        for sp in self.points:  # bounds relative to the split point (unstable: lo < 0 < up)
            n = sp.node
            iv = state.bounds[n]
            lo = iv.lower if iv.lower.shape[0] == 1 else iv.lower[rows]
            up = iv.upper if iv.upper.shape[0] == 1 else iv.upper[rows]
            lo = lo.reshape(-1, self.graph[n].numel) - sp.point
            up = up.reshape(-1, self.graph[n].numel) - sp.point
            lo, up = lo.expand(D, -1), up.expand(D, -1)
            slack = EMPTY_RTOL * (1 + lo.abs() + up.abs())  # bounds carry rounding error
            empty |= (lo > up + slack).any(1)
            los.append(lo)
            ups.append(up)
        return los, ups, empty

    def lp_objective(self, rows: Tensor, offsets: Tensor) -> tuple | None:
        """``(G, g)`` numpy with G y + g = offsets - (values of ``rows``) on the output y, or
        None where the values are not linear in the output (here: never; see subclasses)."""
        return None

    def lp_allowed(self, elapsed: float) -> bool:
        """Whether the next LP may run: MLPs only, while LPs have used at most
        ``LP_TIME_SHARE`` of the ``elapsed`` search time."""
        return self.lp_enabled and self.lp_seconds <= LP_TIME_SHARE * elapsed

    def lp_point(self, los: list[Tensor], ups: list[Tensor], sg: list[Tensor],
                 time_limit: float, margin: bool = False,
                 box: tuple[Tensor, Tensor] | None = None,
                 aim: tuple[Tensor, Tensor] | None = None) -> Tensor | None | bool:
        """A point of the ball (within ``box`` [n] pair, flat, if given) with these signs,
        None if none exists, True if undecided. With ``margin`` the point is strictly inside
        the region when one exists (else True); with ``aim`` (see
        :meth:`~lipbound.bab.anytime.Anytime.lp_aim`) it is the LP's best for the aim when
        the objective's rows are linear in the output (:meth:`lp_objective`)."""
        bounds = [(lo.double().cpu().numpy(), up.double().cpu().numpy())
                  for lo, up in zip(los, ups)]
        blo, bhi = self.blo, self.bhi
        if box is not None:
            blo = box[0].double().cpu().numpy()
            bhi = box[1].double().cpu().numpy()
        t0 = time.perf_counter()
        ans = sign_lp(self.layers, blo, bhi, bounds,
                      [s.cpu().numpy() for s in sg], time_limit, margin,
                      None if aim is None else self.lp_objective(*aim))
        self.lp_seconds += time.perf_counter() - t0
        if ans.status != "feasible":
            return None if ans.status == "infeasible" else True
        if margin and ans.margin <= 0:
            return True
        pt = torch.as_tensor(ans.x, dtype=self.C.dtype, device=self.C.device)
        box = self.domain.interval()  # on the model's device, unlike the LP's numpy box
        pt = torch.minimum(torch.maximum(pt, box.lower[0].flatten()), box.upper[0].flatten())
        pt = pt.reshape(1, *self.domain.in_shape)
        return pt if bool(self.domain.contains(pt.unsqueeze(0), 1e-9).all()) else True


#: domains recompute the CROWN bound of each gradient element (input element x spec row)
#: when there are at most this many per domain and, at the root, they tightened the norm
#: bound by more than ELEMENT_ROWS_GAIN (relative); otherwise (images, or networks whose
#: linear |.| bound is as good) domains reuse the root's element bounds, valid on every
#: sub-domain, and tighten the norm through the |.| node alone (a CROWN row per spec row)
ELEMENT_ROWS_MAX = 8192
ELEMENT_ROWS_GAIN = 1e-2
#: uniform points per child box at which the gradient norm is attained (besides the centres
#: of new input halves and LP points): the boxes the search keeps are where the maximum may
#: be. On ACAS Xu 1_1 (prop_3 centre, eps 0.02) the attained side rose from 409.7 to 479.2
#: in 60 s (upper / attained 1.59x -> 1.38x; 5.5M uniform points of the whole box also give
#: 479.2); on the 40-net family the shares were unchanged (experiments/README.md)
BOX_SAMPLES = 8


class LipschitzSearch(SignSearch):
    """Sign domains bounded on the Clarke-Jacobian graph: ub [D, S] >= ||grad C_s f||_q.

    The root is bounded exactly as method "crown" does (alpha-optimised forward bounds, a
    CROWN bound per gradient element); its forward and element bounds, valid on every
    sub-domain, are intersected into every domain's (forward steps: :meth:`forward_steps`)."""

    desc = "bab lipschitz"

    def __init__(self, model: nn.Module, graph: Graph, C: Tensor, domain: LpBall, q: float):
        super().__init__(graph, C, domain)
        self.q = q
        self.m64, self.dtype = model64(model, domain.center[:1])
        self.reach = (_input_reach(self.layers, C) if self.layers is not None else
                      _graph_reach(graph, self.names, C.dtype, C.device))
        self.root_gradient: Interval | None = None  # element bounds [S, *in] on the ball
        self.pattern_exact = bool(self.names) and relu_like_only(graph)
        self.element_rows = math.prod(domain.in_shape) * C.shape[0] <= ELEMENT_ROWS_MAX
        self.force_elements = False  # every domain bounds its elements (input halves)
        self.box_samples = BOX_SAMPLES

    def bound(self, signs: list[Tensor], parent_ub: Tensor | None = None,
              threshold: float | None = None, boxes: tuple[Tensor, Tensor] | None = None,
              parent: tuple[list[Tensor], list[Tensor]] | None = None
              ) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
        """ub [D, S] (-inf for empty domains), forward bounds per layer [D, m] and the
        branching scores per layer [D, m] (see :meth:`jacobian_scores`) of the domains with
        these signs (on the ball clipped to ``boxes``, if given; ``parent``: the parents'
        forward bounds, :meth:`known_forward`). With ``parent_ub``
        [D, S] and ``threshold``, only the spec rows some parent bounds at or above the
        threshold are recomputed; the others keep the parent's bound (valid on the child)."""
        rows = _rows_to_bound(parent_ub, threshold)
        C = self.C if rows is None else self.C[rows]
        D = self.count(signs, boxes)
        known, dom = self.restriction(signs, self._known_gradient(rows, D), boxes, parent)
        root = self.is_root(signs, boxes) and rows is None
        if root:
            self.prime_root(dom)
        t0 = time.perf_counter()
        with torch.no_grad():
            state, jg = jacobian_state(self.graph, C, dom, "crown", self.q,
                                       forward_iterations=self.forward_steps(root),
                                       bound_gradient=False, restriction=known)
            if root:
                self.child_cost = time.perf_counter() - t0
                self._keep_root(state, jg)
            elif self.element_rows or self.root_gradient is None:
                _bound_elements(state, jg)
            ub = norm_upper(state, jg, self.q, "crown").reshape(D, C.shape[0])
        if rows is not None:
            ub = parent_ub.clone().index_copy_(1, rows, ub)
        los, ups, empty = self.layer_bounds(state, D, C.shape[0])
        scores = self.jacobian_scores(state, jg, D)
        return torch.where(empty[:, None], -torch.inf, ub), los, ups, scores

    @property
    def final_when_fixed(self) -> bool:
        """A fixed pattern's bound is exact only with its own element bounds (the root's
        loose ones would keep the |.| relaxation of the norm)."""
        return self.pattern_exact and self.element_rows

    def _keep_root(self, state, jg) -> None:
        """Bound the root's gradient elements, keep its element and forward bounds, and
        decide whether children recompute the elements (see ``ELEMENT_ROWS_GAIN``)."""
        without = float(norm_upper(state, jg, self.q, "crown").max())
        _bound_elements(state, jg)
        self.root_gradient = state.interval(jg.gradient)
        self.keep_forward(state)
        with_rows = float(norm_upper(state, jg, self.q, "crown").max())
        gain = (without - with_rows) / max(abs(without), 1e-300)
        self.element_rows = self.element_rows and (gain > ELEMENT_ROWS_GAIN
                                                   or self.force_elements)
        if self.element_rows:  # children recompute the elements too: they cost what it cost
            self.child_cost = None

    def _known_gradient(self, rows: Tensor | None, D: int) -> Interval | None:
        """The root's element bounds for spec rows ``rows`` repeated over D domains
        ([D * S', *in], row d * S' + s), when domains reuse them."""
        g = self.root_gradient
        if g is None or self.element_rows:
            return None
        lo, up = (g.lower, g.upper) if rows is None else (g.lower[rows], g.upper[rows])
        rep = (D,) + (1,) * (lo.dim() - 1)
        return Interval(lo.repeat(*rep), up.repeat(*rep))

    def jacobian_scores(self, state, jg, D: int) -> list[Tensor]:
        """Per neuron, how much its switch can move the gradient: the largest |cotangent| it
        reads (over spec rows) times the l1 reach of its row to the input (|W| products)."""
        mags = cotangent_magnitude(state, jg, self.names, D)
        return [m * r for m, r in zip(mags, self.reach)]

    def attain(self, pts: Tensor) -> Tensor:
        G = row_gradients(self.m64, pts.to(self.dtype), self.C.to(self.dtype))
        return torch.linalg.vector_norm(G.flatten(2), ord=self.q, dim=2).t().to(self.C.dtype)


def _bound_elements(state, jg) -> None:
    """A CROWN bound for every gradient element (input element x spec row), intersected in."""
    if state.dep[jg.gradient]:
        state.set_bounds(jg.gradient, crown_node_bounds(state, jg.gradient, None, 0))


