"""Branch-and-bound on ReLU / LeakyReLU activation signs (local Lipschitz constants; output
bounds reuse the search through :class:`SignSearch`, see :mod:`lipbound.bab.outputs`).

Any graph whose ReLU / LeakyReLU inputs can be split works (MLPs, CNNs, residual networks);
the LP feasibility check below needs an MLP (:func:`mlp_layers`) and is off for other graphs,
whose domains are pruned only when their forward bounds cross.

A domain fixes the sign of some pre-activations (z_i >= 0 or z_i <= 0, closed). It is bounded
with the splits in force: the root's bounds (forward nodes and gradient elements, valid on
every sub-domain) are intersected in, forward bounds are clamped and re-tightened (MLPs:
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

from lipbound.bab.anytime import Anytime, BabResult
from lipbound.bab.chunks import bound_in_chunks
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
from lipbound.jacobian.attained import attained_lower, model64, row_gradients
from lipbound.jacobian.bound import jacobian_state, norm_upper
from lipbound.ops import registry
from lipbound.progress import ProgressFlag, bar
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
#: the LP feasibility check runs on domains with at most this many unstable unsplit neurons
#: (near the leaves, where it prunes; on wide layers an LP per domain costs more than it saves)
LP_MAX_OPEN = 32
#: per step, domains with more open neurons than LP_ALWAYS_OPEN get at most LP_PER_STEP LPs
#: (the largest gaps first): on MNIST-size inputs an LP costs about as much as bounding a
#: domain; near the leaves, where it prunes, every domain gets one
LP_PER_STEP = 4
LP_ALWAYS_OPEN = 8
#: seconds per LP; an undecided LP (time limit) leaves its domain to be split further
LP_TIME_LIMIT = 1.0
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


#: with objective "max", children recompute only the spec rows whose parent bound is at least
#: this fraction of the current certified maximum (the others keep the parent's bound)
LAZY_ROWS = 0.5


def _pick_neuron(lo: list[Tensor], up: list[Tensor], sg: list[Tensor],
                 score: list[Tensor]) -> tuple[int, int] | None:
    """The unstable unsplit neuron of the earliest such layer whose switch can move the
    gradient most (splitting earlier layers first also tightens later forward bounds)."""
    for li, (l, u, s, sc) in enumerate(zip(lo, up, sg, score)):
        unst = (l < 0) & (u > 0) & (s == 0)
        if unst.any():
            return li, int(torch.where(unst, sc, -torch.inf).argmax())
    return None


class SignSearch:
    """What every sign-splitting search shares: the split nodes (pre-activations), the input
    box, the LP check (MLPs: ``layers``; None for other graphs, where the LP is off) and the
    per-layer bounds of a propagation. Subclasses define :meth:`bound` (ub [D, R], forward
    bounds and branching scores per layer [D, m]) and :meth:`attain` (values [N, R] at
    points of the set)."""

    desc = "bab (relu splits)"

    def __init__(self, graph: Graph, C: Tensor, domain: LpBall):
        try:
            self.layers: list[MlpLayer] | None = mlp_layers(graph)
            self.points = [SplitPoint(L.z, 0.0, True) for L in self.layers[:-1]]
        except UnsupportedModelError:
            self.layers, self.points = None, split_points(graph)
        #: the node each split variable family splits (one entry per :attr:`points` entry:
        #: a node with several kinks appears once per kink)
        self.names = [sp.node for sp in self.points]
        self.graph, self.C, self.domain = graph, C, domain
        self.lp_enabled = self.layers is not None
        self.lp_seconds = 0.0  # time spent in LPs so far
        self.root_forward: dict[str, Interval] = {}  # forward bounds [1, *shape] on the ball
        self.child_cost: float | None = None  # seconds to bound one child, set at the root
        self.forward_iterations = FORWARD_ITERATIONS
        box = domain.interval()
        self.blo = box.lower[0].flatten().double().cpu().numpy()
        self.bhi = box.upper[0].flatten().double().cpu().numpy()

    def forward_steps(self) -> int:
        """alpha/beta-CROWN steps for every domain's forward bounds: MLPs re-optimise them
        per domain; other graphs (convolutions: costly per step) use CROWN with the root's
        optimised bounds (:meth:`prime_root`) and the split clamps."""
        return self.forward_iterations if self.layers is not None else 0

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

    @staticmethod
    def is_root(signs: list[Tensor]) -> bool:
        """One domain without splits (the whole ball): its bounds hold on every domain."""
        return signs[0].shape[0] == 1 and not any(bool(s.any()) for s in signs)

    def keep_forward(self, state) -> None:
        """Keep the root's forward bounds: valid on every sub-domain, they are intersected
        into every later domain's."""
        self.root_forward = {n.name: state.bounds[n.name] for n in self.graph.nodes
                             if n.name in state.bounds}

    def splits(self, signs: list[Tensor]) -> tuple[dict[str, Tensor], LpBall]:
        """The sign splits (at 0, of ReLU-like inputs) by node name and the domain repeated
        D times (kink splits: :meth:`restriction`)."""
        D = signs[0].shape[0]
        splits = {sp.node: s.reshape(D, *self.graph[sp.node].shape)
                  for sp, s in zip(self.points, signs) if sp.sign}
        return splits, self.domain.select(torch.zeros(D, dtype=torch.long,
                                                      device=signs[0].device))

    def restriction(self, signs: list[Tensor], gradient: Interval | None = None
                    ) -> tuple[Restriction, LpBall]:
        """Everything a domain's bound may assume (its sign and kink splits, the root's
        forward bounds, known gradient bounds) and the domain repeated D times."""
        splits, dom = self.splits(signs)
        boxes = kink_boxes(self.graph, self.points, signs, self.C.dtype)
        return Restriction(splits, self.root_forward, gradient, boxes), dom

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

    def lp_allowed(self, elapsed: float) -> bool:
        """Whether the next LP may run: MLPs only, while LPs have used at most
        ``LP_TIME_SHARE`` of the ``elapsed`` search time."""
        return self.lp_enabled and self.lp_seconds <= LP_TIME_SHARE * elapsed

    def lp_point(self, los: list[Tensor], ups: list[Tensor], sg: list[Tensor],
                 time_limit: float, margin: bool = False) -> Tensor | None | bool:
        """A point of the ball with these signs, None if none exists, True if undecided.
        With ``margin`` the point is strictly inside the region when one exists (else True)."""
        bounds = [(lo.double().cpu().numpy(), up.double().cpu().numpy())
                  for lo, up in zip(los, ups)]
        t0 = time.perf_counter()
        ans = sign_lp(self.layers, self.blo, self.bhi, bounds,
                      [s.cpu().numpy() for s in sg], time_limit, margin)
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


class LipschitzSearch(SignSearch):
    """Sign domains bounded on the Clarke-Jacobian graph: ub [D, S] >= ||grad C_s f||_q.

    The root is bounded exactly as method "crown" does (alpha-optimised forward bounds, a
    CROWN bound per gradient element); its forward and element bounds, valid on every
    sub-domain, are intersected into every domain's (forward steps: :meth:`forward_steps`)."""

    desc = "bab lipschitz (relu splits)"

    def __init__(self, model: nn.Module, graph: Graph, C: Tensor, domain: LpBall, q: float):
        super().__init__(graph, C, domain)
        self.q = q
        self.m64, self.dtype = model64(model)
        self.reach = (_input_reach(self.layers, C) if self.layers is not None else
                      _graph_reach(graph, self.names, C.dtype, C.device))
        self.root_gradient: Interval | None = None  # element bounds [S, *in] on the ball
        self.element_rows = math.prod(domain.in_shape) * C.shape[0] <= ELEMENT_ROWS_MAX

    def bound(self, signs: list[Tensor], parent_ub: Tensor | None = None,
              threshold: float | None = None
              ) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
        """ub [D, S] (-inf for empty domains), forward bounds per layer [D, m] and the
        branching scores per layer [D, m] (see :meth:`jacobian_scores`). With ``parent_ub``
        [D, S] and ``threshold``, only the spec rows some parent bounds at or above the
        threshold are recomputed; the others keep the parent's bound (valid on the child)."""
        D = signs[0].shape[0]
        rows = _rows_to_bound(parent_ub, threshold)
        C = self.C if rows is None else self.C[rows]
        known, dom = self.restriction(signs, self._known_gradient(rows, D))
        root = self.is_root(signs) and rows is None
        if root:
            self.prime_root(dom)
        t0 = time.perf_counter()
        with torch.no_grad():
            state, jg = jacobian_state(self.graph, C, dom, "crown", self.q,
                                       forward_iterations=self.forward_steps(),
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

    def _keep_root(self, state, jg) -> None:
        """Bound the root's gradient elements, keep its element and forward bounds, and
        decide whether children recompute the elements (see ``ELEMENT_ROWS_GAIN``)."""
        without = float(norm_upper(state, jg, self.q, "crown").max())
        _bound_elements(state, jg)
        self.root_gradient = state.interval(jg.gradient)
        self.keep_forward(state)
        with_rows = float(norm_upper(state, jg, self.q, "crown").max())
        gain = (without - with_rows) / max(abs(without), 1e-300)
        self.element_rows = self.element_rows and gain > ELEMENT_ROWS_GAIN
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


def bab_relu_lipschitz(model: nn.Module, graph: Graph, C: Tensor, domain: LpBall, q: float, *,
                       timeout: float, rtol: float = 1e-4, atol: float = 1e-9, batch: int = 32,
                       max_domains: int = 100_000, n_samples: int = 256, seed: int = 0,
                       focus_max: bool = False, progress: ProgressFlag = "auto") -> BabResult:
    """Anytime sign-splitting search for max over the ball of ||grad C_s f||_q (any graph
    with ReLU / LeakyReLU activations; the root bound is CROWN's, see :class:`LipschitzSearch`).

    Stops when the gap closes or the queue is exhausted ("certified"; then the upper bound is
    the exact maximum over the feasible closed patterns), at the timeout or at the domain cap.
    ``focus_max``: certify max_s only (see :meth:`lipbound.bab.anytime.Anytime.target`).
    """
    run = Anytime(timeout, rtol, atol, max_domains, focus_max)
    srch = LipschitzSearch(model, graph, C, domain, q)
    L, W = attained_lower(model, C, domain, q, n_samples, seed=seed)
    return sign_search(srch, L.to(C.dtype), W.to(C.dtype), run, batch=batch, progress=progress)


def sign_search(srch: SignSearch, L: Tensor, W: Tensor, run: Anytime, *, batch: int,
                progress: ProgressFlag = "auto") -> BabResult:
    """Best-first search over sign domains maximising the R quantities of ``srch``.

    ``L`` [R] / ``W`` [R, *in]: values attained so far and their points. Each step pops the
    ``batch`` domains with the largest gap (fewer when the time left fits fewer); a domain
    that the LP proves empty is dropped, a fully split one is final (its bound is that
    pattern's), any other is split on :func:`_pick_neuron`'s neuron and its children are
    bounded together, taking min(child, parent). U = max(queued bounds, final and pruned
    bounds) is certified at every stop; ``run``'s proof goals (if any) stop it once they hold
    on every domain.
    """
    timeout = run.timeout
    dev = srch.C.device
    sg_q = [torch.zeros(1, srch.graph[n].numel, device=dev) for n in srch.names]
    t_root = time.perf_counter()
    ub_q, lo_q, up_q, sc_q = srch.bound(sg_q)
    run.child_time = srch.child_cost or time.perf_counter() - t_root  # estimate for a child
    done = torch.full_like(L, -torch.inf)  # bounds of pruned or fully split domains
    bounded = 1
    with bar(progress=progress, desc=srch.desc, unit="dom") as pbar:
        while True:
            U = torch.maximum(ub_q.max(0).values if len(ub_q) else done, done)
            status = run.stop(U, L, ub_q, 2 * batch, pbar)
            if status is not None:
                break
            t0 = time.perf_counter()
            pick = run.gaps(ub_q, L).topk(run.pops(batch, len(ub_q))).indices
            keep = torch.ones(len(ub_q), dtype=torch.bool, device=dev)
            keep[pick] = False
            kids, parents, pts, n_lp = [], [], [], 0
            for d in pick.tolist():
                left = timeout - run.elapsed()
                if left <= 0:
                    keep[d] = True  # not processed: back to the queue
                    continue
                lo = [t[d] for t in lo_q]
                up = [t[d] for t in up_q]
                sg = [t[d] for t in sg_q]
                sc = [t[d] for t in sc_q]
                n_open = sum(int(((a < 0) & (b > 0) & (c == 0)).sum()) for a, b, c in
                             zip(lo, up, sg))
                use_lp = srch.lp_allowed(run.elapsed()) and n_open <= LP_MAX_OPEN and (
                    n_lp < LP_PER_STEP or n_open <= LP_ALWAYS_OPEN)
                n_lp += int(use_lp)
                x = srch.lp_point(lo, up, sg, min(left, LP_TIME_LIMIT)) if use_lp else True
                if x is None:  # no input of the ball has these signs: drop the domain
                    run.drop(torch.full_like(ub_q[d:d + 1], -torch.inf))
                    continue
                if x is not True:  # True: undecided (time limit), keep splitting
                    pts.append(x)
                which = _pick_neuron(lo, up, sg, sc)
                if which is None:  # every neuron fixed: the bound is this pattern's norm
                    if bool((ub_q[d] > run.target(L)).any()) and use_lp:  # attain it inside
                        x = srch.lp_point(lo, up, sg, min(left, LP_TIME_LIMIT), margin=True)
                        if x is not None and x is not True:
                            pts.append(x)
                    done = torch.maximum(done, ub_q[d])
                    run.drop(ub_q[d:d + 1])
                    continue
                li, j = which
                for sign in (1.0, -1.0):
                    child = [t.clone() for t in sg]
                    child[li][j] = sign
                    kids.append(child)
                    parents.append(ub_q[d])
            if pts:
                vals = srch.attain(torch.cat(pts))
                best, idx = vals.max(0)
                better = best > L
                L = torch.where(better, best, L)
                W[better] = torch.cat(pts)[idx[better]]
            sg_k = [torch.stack([k[i] for k in kids]) for i in range(len(srch.names))] \
                if kids else None
            lo_q = [t[keep] for t in lo_q]
            up_q = [t[keep] for t in up_q]
            sg_q = [t[keep] for t in sg_q]
            sc_q = [t[keep] for t in sc_q]
            ub_q = ub_q[keep]
            if sg_k is not None:
                pub = torch.stack(parents)
                thr = LAZY_ROWS * float(U.max()) if run.focus_max else None
                cub, clo, cup, csc = bound_in_chunks(srch.bound, sg_k, pub, thr, n=len(kids))
                cub = torch.minimum(cub, pub)
                bounded += len(kids)
                pbar.update(len(kids))
                alive = torch.isfinite(cub).all(1) & run.alive(cub, L)
                dead = ~alive & torch.isfinite(cub).all(1)
                if dead.any():
                    done = torch.maximum(done, cub[dead].max(0).values)
                run.drop(cub[~alive])
                lo_q = [torch.cat([a, b[alive]]) for a, b in zip(lo_q, clo)]
                up_q = [torch.cat([a, b[alive]]) for a, b in zip(up_q, cup)]
                sg_q = [torch.cat([a, b[alive]]) for a, b in zip(sg_q, sg_k)]
                sc_q = [torch.cat([a, b[alive]]) for a, b in zip(sc_q, csc)]
                ub_q = torch.cat([ub_q, cub[alive]])
                run.child_time = (time.perf_counter() - t0) / len(kids)
    U = torch.maximum(ub_q.max(0).values if len(ub_q) else done, done)
    return BabResult(U, L, W, status, bounded, tuple(run.trace), run.proven(ub_q))

