"""Input-splitting branch-and-bound on the sign of one partial derivative, batched.

To certify ``sign * d f / d x_j >= -tol`` over a box, bound the Clarke Jacobian of f on the box
(:class:`BoxBounder`: the box is the l_inf ball around its centre with radius its largest
half-width, clipped to the box; many boxes go through one batched propagation). A box whose
bound already meets the target is closed. Each step takes up to ``BATCH`` of the worst open
boxes (lowest bound, best-first) and halves each along the coordinate whose two halves have the
best sum of interval (IBP) bounds, all candidate halves of all boxes bounded in one IBP call
(cheap strong branching); the chosen halves are re-bounded by ``method`` (plain CROWN forward
bounds for speed, the parent's Jacobian bounds intersected in) where IBP did not close them, and
their centres and a few random points in each are checked for a wrong-signed derivative. The
search ends with every box closed (certified), a verified witness, or at the time / domain
budget.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lipbound.audit._probe import Probe
from lipbound.bounds.domains import LpBall
from lipbound.bounds.interval import Interval
from lipbound.bounds.restriction import Restriction
from lipbound.inputs import batched_input, get_graph, resolve_model
from lipbound.jacobian.bound import jacobian_state
from lipbound.propagate.driver import check_method
from lipbound.propagate.rounding import finish_elements

BATCH = 32  # open boxes split per step
MAX_CANDIDATES = 16384  # candidate halves bounded per strong-branching IBP call
SAMPLES = 4  # random points per new box checked for a wrong-signed derivative


@dataclass
class Box:
    lo: Tensor
    hi: Tensor
    jl: Tensor  # flat Jacobian lower bounds [n]
    ju: Tensor  # flat Jacobian upper bounds [n]


class BoxBounder:
    """Certified element-wise bounds on the Clarke Jacobian of ``spec . f`` over many boxes.

    ``bound(lo, hi, method)`` with ``lo``/``hi`` [N, *in] returns (jl, ju) [N, n] (flat inputs):
    every chain-rule Clarke gradient of ``spec . f`` at any point of box i lies in
    [jl[i], ju[i]] (float64, widened for rounding like :func:`lipbound.jacobian_bounds`).
    ``parent`` ([N, n] pairs) are known bounds on the boxes (e.g. a parent box's), intersected
    in before the backward relaxations are formed and again at the end.
    """

    def __init__(self, model: nn.Module, example: Tensor, spec: Tensor) -> None:
        model = resolve_model(model)
        x1 = batched_input(model, example.to(torch.float64))
        self.graph = get_graph(model, x1, torch.float64, example.device)
        self.spec = spec.to(torch.float64)
        self.in_shape = tuple(x1.shape[1:])

    def bound(self, lo: Tensor, hi: Tensor, method: str, *, forward_iterations: int | None = None,
              parent: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        method = check_method(method)
        N = lo.shape[0]
        lo, hi = lo.reshape(N, *self.in_shape), hi.reshape(N, *self.in_shape)
        eps = ((hi - lo) / 2).flatten(1).amax(1)
        dom = LpBall((lo + hi) / 2, eps, math.inf, lo, hi)
        known = None
        if parent is not None and method != "ibp":
            known = Interval(parent[0].reshape(N, *self.in_shape),
                             parent[1].reshape(N, *self.in_shape))
        with torch.no_grad():
            state, jg = jacobian_state(self.graph, self.spec, dom, method,
                                       forward_iterations=forward_iterations,
                                       restriction=Restriction(gradient=known))
            g = state.interval(jg.gradient)
            rows = torch.arange(N, device=lo.device).repeat_interleave(self.spec.shape[0])
            jl, ju = finish_elements(g.lower.reshape(N, -1), g.upper.reshape(N, -1), jg.graph,
                                     jg.gradient, dom.select(rows).interval())
        if parent is not None:
            jl, ju = torch.maximum(jl, parent[0]), torch.minimum(ju, parent[1])
        return jl, ju


def bound_box(bounder: BoxBounder, lo: Tensor, hi: Tensor, method: str) -> Box:
    """The root box [lo, hi] bounded by IBP and ``method`` (its optimised forward bounds), the
    intersection of both enclosures (each is sound, so their intersection is)."""
    il, iu = bounder.bound(lo[None], hi[None], "ibp")
    jl, ju = il, iu
    if method != "ibp":
        jl, ju = bounder.bound(lo[None], hi[None], method, parent=(il, iu))
    return Box(lo, hi, jl[0], ju[0])


@dataclass
class Outcome:
    status: str  # "certified" | "refuted" | "budget"
    lower: float  # certified bound on min of d f / d x_j over the box
    upper: float  # certified bound on max of d f / d x_j over the box
    domains: int
    witness: Tensor | None = None
    extra: dict = field(default_factory=dict)


def _halves(lo: Tensor, hi: Tensor, coords: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Left/right halves of boxes lo, hi [M, n] along coords [M]: (l_lo, l_hi, r_lo, r_hi)."""
    rows = torch.arange(lo.shape[0], device=lo.device)
    mid = (lo[rows, coords] + hi[rows, coords]) / 2
    l_hi, r_lo = hi.clone(), lo.clone()
    l_hi[rows, coords] = mid
    r_lo[rows, coords] = mid
    return lo, l_hi, r_lo, hi


class _Search:
    """The state of one :func:`certify_sign` run (heap of open boxes, closed envelope)."""

    def __init__(self, j: int, sign: int, tol: float, min_width: float) -> None:
        self.j, self.sign, self.tol, self.min_width = j, sign, tol, min_width
        self.heap: list = []
        self.counter = itertools.count()
        self.closed = [math.inf, -math.inf]
        self.stuck: list[Box] = []

    def key(self, jl: Tensor, ju: Tensor) -> Tensor:
        """sign * (lower bound of d f / d x_j): >= -tol closes a box."""
        return jl[..., self.j] if self.sign > 0 else -ju[..., self.j]

    def settle(self, b: Box) -> None:
        k = float(self.key(b.jl, b.ju))
        if k >= -self.tol:
            self.closed[0] = min(self.closed[0], float(b.jl[self.j]))
            self.closed[1] = max(self.closed[1], float(b.ju[self.j]))
        else:
            heapq.heappush(self.heap, (k, -next(self.counter), b))

    def envelope(self, *extra: Box) -> tuple[float, float]:
        leaves = [b for _, _, b in self.heap] + self.stuck + list(extra)
        lo = min([self.closed[0]] + [float(b.jl[self.j]) for b in leaves])
        hi = max([self.closed[1]] + [float(b.ju[self.j]) for b in leaves])
        return lo, hi

    def pop(self, k: int) -> list[Box]:
        """Up to k open boxes, worst first; boxes too thin to split go to ``stuck``."""
        out = []
        while self.heap and len(out) < k:
            b = heapq.heappop(self.heap)[2]
            if float((b.hi - b.lo).max()) <= self.min_width:
                self.stuck.append(b)
            else:
                out.append(b)
        return out


def _choose(bounder: BoxBounder, search: _Search, lo: Tensor, hi: Tensor):
    """Strong branching for boxes [M, n]: the coordinate per box whose two halves have the best
    sum of IBP keys, and those halves with their IBP bounds (one batched IBP call)."""
    M, n = lo.shape
    box = torch.arange(M).repeat_interleave(n)
    coord = torch.arange(n).repeat(M)
    l_lo, l_hi, r_lo, r_hi = _halves(lo[box], hi[box], coord)
    jl, ju = bounder.bound(torch.cat([l_lo, r_lo]), torch.cat([l_hi, r_hi]), "ibp")
    keys = search.key(jl, ju).clamp(max=0.0)  # a closed half counts as closed, no more
    score = (keys[:M * n] + keys[M * n:]).view(M, n)
    score[((hi - lo) <= search.min_width)] = -math.inf
    best = score.argmax(1)
    pick = torch.arange(M) * n + best
    both = torch.cat([pick, pick + M * n])
    los, his = torch.cat([l_lo, r_lo])[both], torch.cat([l_hi, r_hi])[both]
    return los, his, jl[both], ju[both]


def _find_witness(probe: Probe, lo: Tensor, hi: Tensor, shape: tuple, j: int, sign: int,
                  gen: torch.Generator, per_box: int = SAMPLES) -> Tensor | None:
    """A verified wrong-signed point among the centres of the boxes [M, n] and ``per_box``
    uniform points in each (one batched autograd call), or None."""
    u = torch.rand((lo.shape[0], per_box, lo.shape[1]), generator=gen, dtype=lo.dtype)
    pts = torch.cat([((lo + hi) / 2)[:, None], lo[:, None] + u.to(lo.device) * (hi - lo)[:, None]],
                    dim=1).reshape(-1, *shape)
    d = sign * probe.derivative(pts, j)
    for i in torch.argsort(d)[:8]:
        if float(d[i]) < -probe.tol and probe.verify(pts[i], j, sign):
            return pts[i]
    return None


def certify_sign(bounder: BoxBounder, probe: Probe, root: Box, j: int, sign: int,
                 deadline: float, max_domains: int, method: str = "crown",
                 seed: int = 0) -> Outcome:
    """Branch-and-bound for ``sign * d f / d x_j >= -tol`` over ``root`` (already bounded).

    Returns "certified" (every box closed: the claim holds on the whole root box), "refuted"
    (``witness``: a point verified by :meth:`Probe.verify`) or "budget". ``lower``/``upper``
    always enclose every Clarke derivative d f / d x_j on the root box (min/max over leaves).
    """
    shape = root.lo.shape
    width = float((root.hi - root.lo).max())
    search = _Search(j, sign, probe.tol, 1e-9 * width)
    search.settle(root)
    domains = 1
    gen = torch.Generator().manual_seed(seed)
    while search.heap:
        if time.perf_counter() > deadline or domains >= max_domains:
            return Outcome("budget", *search.envelope(), domains)
        per_step = max(1, min(BATCH, MAX_CANDIDATES // (2 * root.lo.numel())))
        boxes = search.pop(min(per_step, max(1, (max_domains - domains) // 2)))
        if not boxes:
            break
        lo = torch.stack([b.lo.flatten() for b in boxes])
        hi = torch.stack([b.hi.flatten() for b in boxes])
        los, his, jl, ju = _choose(bounder, search, lo, hi)
        parent = (torch.cat([torch.stack([b.jl for b in boxes])] * 2),
                  torch.cat([torch.stack([b.ju for b in boxes])] * 2))
        jl, ju = torch.maximum(jl, parent[0]), torch.minimum(ju, parent[1])
        witness = _find_witness(probe, los, his, shape, j, sign, gen)
        if witness is not None:
            return Outcome("refuted", *search.envelope(*boxes), domains, witness=witness)
        open_ = (search.key(jl, ju) < -probe.tol).nonzero().flatten()
        if method != "ibp" and open_.numel():
            cl, cu = bounder.bound(los[open_], his[open_], method, forward_iterations=0,
                                   parent=(jl[open_], ju[open_]))
            jl[open_], ju[open_] = cl, cu
        for i in range(los.shape[0]):
            search.settle(Box(los[i].view(shape), his[i].view(shape), jl[i], ju[i]))
        domains += los.shape[0]
    status = "certified" if not search.stuck and not search.heap else "budget"
    return Outcome(status, *search.envelope(), domains)
