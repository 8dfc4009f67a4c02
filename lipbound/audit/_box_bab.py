"""Input-splitting branch-and-bound on the sign of one partial derivative.

To certify ``sign * d f / d x_j >= -tol`` over a box, bound the Clarke Jacobian of f on the box
(``lipbound.jacobian_bounds``, CROWN; the box is the l_inf ball around its centre with radius
its largest half-width, clipped to the box by ``data_range``). A box whose bound already
meets the target is closed; otherwise the worst open box (lowest bound, best-first) is halved
along the coordinate with the largest ``width_i * max(|J_lower_i|, |J_upper_i|)`` (how much f
can move along i inside the box; the widest coordinate when that is 0), both halves are
bounded, and their centres are checked for a wrong-signed derivative. The search ends with
every box closed (certified), a verified witness, or at the time / domain budget.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lipbound.api import jacobian_bounds
from lipbound.audit._probe import Probe


@dataclass
class Box:
    lo: Tensor
    hi: Tensor
    jl: Tensor  # flat Jacobian lower bounds [n]
    ju: Tensor  # flat Jacobian upper bounds [n]


def bound_box(model: nn.Module, lo: Tensor, hi: Tensor, spec: Tensor, method: str,
              done: Callable[[Box], bool] | None = None) -> Box:
    """Certified element-wise bounds on the Clarke Jacobian of ``spec . f`` over [lo, hi].

    IBP first (cheap); when ``done`` says that is not enough, ``method`` too, keeping the
    intersection of both enclosures (each is sound, so their intersection is).
    """
    center = (lo + hi) / 2
    eps = float(((hi - lo) / 2).max())
    box = None
    for m in dict.fromkeys(("ibp", method)):
        jl, ju = jacobian_bounds(model, center, eps, norm=math.inf, spec=spec, method=m,
                                 data_range=(lo, hi))
        jl, ju = jl.flatten(), ju.flatten()
        if box is not None:
            jl, ju = torch.maximum(jl, box.jl), torch.minimum(ju, box.ju)
        box = Box(lo, hi, jl, ju)
        if done is not None and done(box):
            break
    return box


@dataclass
class Outcome:
    status: str  # "certified" | "refuted" | "budget"
    lower: float  # certified bound on min of d f / d x_j over the box
    upper: float  # certified bound on max of d f / d x_j over the box
    domains: int
    witness: Tensor | None = None
    extra: dict = field(default_factory=dict)


def _split_coordinate(box: Box, root_width: Tensor) -> int:
    width = (box.hi - box.lo).flatten()
    score = width * torch.maximum(box.jl.abs(), box.ju.abs())
    if float(score.max()) <= 0:
        score = width / root_width.clamp_min(1e-300)
    return int(torch.argmax(score))


def _strong_coordinate(model, box: Box, key, spec: Tensor, min_width: float) -> int:
    """The coordinate whose halves have the best sum of IBP keys (cheap strong branching)."""
    width = (box.hi - box.lo).flatten()
    best, best_i = -math.inf, int(torch.argmax(width))
    for i in range(width.numel()):
        if float(width[i]) <= min_width:
            continue
        score = sum(key(bound_box(model, lo, hi, spec, "ibp")) for lo, hi in _halves(box, i))
        if score > best:
            best, best_i = score, i
    return best_i


def _halves(box: Box, i: int) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    lo, hi = box.lo.flatten().clone(), box.hi.flatten().clone()
    mid = (lo[i] + hi[i]) / 2
    hi_left, lo_right = hi.clone(), lo.clone()
    hi_left[i], lo_right[i] = mid, mid
    shape = box.lo.shape
    return (lo.view(shape), hi_left.view(shape)), (lo_right.view(shape), hi.view(shape))


def certify_sign(model: nn.Module, probe: Probe, root: Box, spec: Tensor, j: int, sign: int,
                 deadline: float, max_domains: int, method: str = "crown") -> Outcome:
    """Branch-and-bound for ``sign * d f / d x_j >= -tol`` over ``root`` (already bounded).

    Returns "certified" (every box closed: the claim holds on the whole root box), "refuted"
    (``witness``: a point verified by :meth:`Probe.verify`) or "budget". ``lower``/``upper``
    always enclose every Clarke derivative d f / d x_j on the root box (min/max over leaves).
    """
    tol = probe.tol
    key = (lambda b: float(b.jl[j])) if sign > 0 else (lambda b: -float(b.ju[j]))
    root_width = (root.hi - root.lo).flatten()
    min_width = 1e-9 * float(root_width.max())
    counter = itertools.count()
    heap: list = []
    closed = [math.inf, -math.inf]
    stuck: list[Box] = []

    def settle(b: Box) -> None:
        if key(b) >= -tol:
            closed[0], closed[1] = min(closed[0], float(b.jl[j])), max(closed[1], float(b.ju[j]))
        else:
            heapq.heappush(heap, (key(b), -next(counter), b))

    def envelope(*extra: Box) -> tuple[float, float]:
        leaves = [b for _, _, b in heap] + stuck + list(extra)
        lo = min([closed[0]] + [float(b.jl[j]) for b in leaves])
        hi = max([closed[1]] + [float(b.ju[j]) for b in leaves])
        return lo, hi

    settle(root)
    domains = 1
    while heap:
        if time.perf_counter() > deadline or domains >= max_domains:
            return Outcome("budget", *envelope(), domains)
        _, _, box = heapq.heappop(heap)
        i = _strong_coordinate(model, box, key, spec, min_width)
        if float((box.hi - box.lo).flatten()[i]) <= min_width:
            stuck.append(box)
            continue
        halves = _halves(box, i)
        centers = torch.stack([(lo + hi) / 2 for lo, hi in halves])
        d = sign * probe.derivative(centers, j)
        for c in centers[torch.argsort(d)]:
            if probe.verify(c, j, sign):
                return Outcome("refuted", *envelope(box), domains, witness=c)
        for lo, hi in halves:
            settle(bound_box(model, lo, hi, spec, method, done=lambda b: key(b) >= -tol))
            domains += 1
    status = "certified" if not stuck else "budget"
    return Outcome(status, *envelope(), domains)
