"""Best-first branch-and-bound over input sub-boxes, maximising R quantities at once.

For quantities ``phi_r`` (e.g. a gradient norm or a spec row of the output) over an input set
X covered by boxes, a bounding function gives ``ub[d, r] >= sup_{x in X ∩ box_d} phi_r(x)``
and an attainment function gives ``phi_r`` at points of X. The loop keeps

    sup_X phi_r  <=  max( max_{d in queue} ub[d, r], pruned[r] )  =: U_r

(every part of X lies in a queued box or in a pruned one), and ``L_r`` = the best value
attained at a point of X. Each step pops the ``batch`` boxes with the largest relative gap,
halves each along its widest coordinate, bounds the children together (one batched
propagation), takes ``min(child, parent)`` (a child is a subset, so splitting never loosens a
bound), and drops children that cannot raise any U_r above ``L_r + tol``. It stops when
``U_r <= L_r + tol`` for every r ("certified": the gap is closed), at the time limit
("timeout"; near it, steps pop only as many boxes as the time left fits at the last step's
cost per box, and none starts when even one box would overrun it), at the domain cap
("domain limit"), or once its proof goals hold on every domain ("below threshold", for
verification: see :class:`Anytime`). Whatever the status, U is a certified upper bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lipbound.bab.chunks import bound_in_chunks
from lipbound.progress import ProgressFlag, bar

BoundFn = Callable[[Tensor, Tensor], Tensor]  # (lower [N, *in], upper [N, *in]) -> ub [N, R]
AttainFn = Callable[[Tensor], Tensor]  # points [N, *in] inside X -> values [N, R]


@dataclass(frozen=True)
class TracePoint:
    """The state of the search at ``time`` seconds: max_r U_r, max_r L_r, queued boxes."""

    time: float
    upper: float
    lower: float
    domains: int


@dataclass(frozen=True)
class BabResult:
    """upper [R] >= sup_X phi_r; lower [R] = phi_r(witness[r]) with witness[r] in X."""

    upper: Tensor
    lower: Tensor
    witness: Tensor
    status: str
    domains_bounded: int
    trace: tuple[TracePoint, ...] = field(default_factory=tuple)
    #: [G] with proof goals (:class:`Anytime`): goal g held on every domain of the cover
    proven: Tensor | None = None


def _tolerance(lower: Tensor, rtol: float, atol: float) -> Tensor:
    return lower + rtol * lower.abs() + atol


@dataclass
class Anytime:
    """The bookkeeping every anytime search shares: the trace, the progress bar's figures
    and the stopping rules (gap closed / queue empty, proof goals met, time, domain cap).

    Proof goals (verification): ``stop_below`` [R] thresholds and ``groups`` [R] (a goal id
    per row, -1 for rows no goal reads; default: every row with a finite threshold is its own
    goal). Goal g holds on a domain when SOME row r of g has ub[r] < stop_below[r] there
    (a conjunction of output constraints is refuted by any one of them, and different
    domains may use different rows); a domain where every goal holds is closed and leaves
    the queue. The search proves goal g when it holds on every domain that was dropped or is
    still queued (:meth:`proven`), and stops ("below threshold") once every goal is proven.
    """

    timeout: float
    rtol: float
    atol: float
    max_domains: int
    focus_max: bool = False
    stop_below: Tensor | None = None
    groups: Tensor | None = None
    start: float = field(default_factory=time.perf_counter)
    trace: list[TracePoint] = field(default_factory=list)
    child_time: float = 0.0  # seconds to bound one child domain (the last step's average)
    dropped_proven: Tensor | None = None  # [G]: goal g held on every dropped domain

    def __post_init__(self) -> None:
        self.members = None if self.stop_below is None else self._members()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def pops(self, batch: int, queued: int) -> int:
        """Domains the next step splits: ``batch``, fewer near the time limit (as many as
        the time left fits at two children each, at least one), at most ``queued``."""
        fits = int((self.timeout - self.elapsed()) / max(2 * self.child_time, 1e-12))
        return min(batch, queued, max(1, fits))

    def target(self, L: Tensor) -> Tensor:
        """The value each row's upper bound must come down to. With ``focus_max`` a row
        only has to reach the best value attained by any row: rows below it cannot change
        max_r U_r, so their domains are not refined further (their U_r stay certified)."""
        return torch.maximum(L, L.max()) if self.focus_max else L

    def _members(self) -> Tensor:
        """[R, G] membership of rows in goals (computed once, as ``members``)."""
        g = self.groups
        if g is None:
            g = torch.where(torch.isfinite(self.stop_below),
                            torch.arange(len(self.stop_below), device=self.stop_below.device),
                            -1)
        ids = g.unique()
        ids = ids[ids >= 0]
        return g[:, None] == ids[None, :]

    def goals_held(self, ub: Tensor) -> Tensor:
        """[N, G]: whether goal g holds on domain n (some row of g below its threshold)."""
        below = (ub < self.stop_below).to(ub.dtype)
        return (below @ self.members.to(ub.dtype)) > 0

    def closed(self, ub: Tensor) -> Tensor:
        """Domains [N] where every goal holds (always False without goals)."""
        if self.stop_below is None:
            return torch.zeros(ub.shape[0], dtype=torch.bool, device=ub.device)
        return self.goals_held(ub).all(1)

    def drop(self, ub: Tensor) -> None:
        """Record domains [N, R] leaving the search (pruned, final or empty)."""
        if self.stop_below is None or ub.shape[0] == 0:
            return
        held = self.goals_held(ub).all(0)
        self.dropped_proven = held if self.dropped_proven is None else self.dropped_proven & held

    def proven(self, ub_q: Tensor) -> Tensor | None:
        """[G]: goal g holds on every dropped and queued domain (None without goals)."""
        if self.stop_below is None:
            return None
        held = self.goals_held(ub_q).all(0)
        return held if self.dropped_proven is None else held & self.dropped_proven

    def alive(self, ub: Tensor, L: Tensor) -> Tensor:
        """Domains [N] with some row above its target (plus tolerance) that are not closed."""
        open_rows = ub > _tolerance(self.target(L), self.rtol, self.atol)
        return open_rows.any(1) & ~self.closed(ub)

    def gaps(self, ub: Tensor, L: Tensor) -> Tensor:
        """Priority [N]: the largest relative gap of a domain's rows to their targets; with
        goals, the largest over open goals of the smallest excess of a goal's rows over
        their thresholds (how far the domain is from holding that goal)."""
        if self.stop_below is not None:
            M = self.members  # [R, G]
            excess = (ub - self.stop_below)[:, :, None].expand(-1, -1, M.shape[1])
            need = torch.where(M[None], excess, torch.inf).min(1).values  # [N, G]
            return torch.where(need >= 0, need, -torch.inf).max(1).values
        T = self.target(L)
        return ((ub - T) / (T.abs() + self.atol)).max(1).values

    def stop(self, U: Tensor, L: Tensor, ub_q: Tensor, growth: int, pbar) -> str | None:
        """Record the state; the status to stop with, or None to go on. ``ub_q`` [N, R]:
        the queued domains' bounds; ``growth``: how many domains the next step can add."""
        queued = len(ub_q)
        self.trace.append(TracePoint(self.elapsed(), float(U.max()), float(L.max()), queued))
        pbar.set_postfix(domains=queued, upper=f"{float(U.max()):.6g}",
                         lower=f"{float(L.max()):.6g}")
        proven = self.proven(ub_q)
        if proven is not None and bool(proven.all()):
            return "below threshold"
        if queued == 0 or bool((U <= _tolerance(self.target(L), self.rtol, self.atol)).all()):
            return "certified"
        if self.elapsed() + 2 * self.child_time >= self.timeout:  # not even one domain fits
            return "timeout"
        if queued + growth > self.max_domains:
            return "domain limit"
        return None


def _split(lo: Tensor, up: Tensor, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Halve each box along the coordinate with the largest weighted width (weight [*in],
    e.g. how strongly each input moves the first layer): 2N children (lower, upper)."""
    N = lo.shape[0]
    flo, fup = lo.flatten(1), up.flatten(1)
    width = fup - flo
    j = (width if weight is None else width * weight.flatten()).argmax(1)
    mid = (flo.gather(1, j[:, None]) + fup.gather(1, j[:, None])) / 2
    lo2, up2 = flo.repeat(2, 1), fup.repeat(2, 1)
    rows = torch.arange(N, device=lo.device)
    up2[rows, j] = mid[:, 0]
    lo2[rows + N, j] = mid[:, 0]
    return lo2.reshape(2 * N, *lo.shape[1:]), up2.reshape(2 * N, *lo.shape[1:])


def maximize(bound_fn: BoundFn, attain_fn: AttainFn, lower: Tensor, upper: Tensor, *,
             init_lower: Tensor, init_witness: Tensor, timeout: float, rtol: float = 1e-4,
             atol: float = 1e-9, batch: int = 64, max_domains: int = 200_000,
             stop_below: Tensor | None = None, groups: Tensor | None = None,
             project: Callable[[Tensor], Tensor] | None = None,
             split_weight: Tensor | None = None, focus_max: bool = False,
             progress: ProgressFlag = "auto", desc: str = "bab") -> BabResult:
    """Run the search on the box [lower, upper] ([*in] each) until a stopping rule fires.

    ``init_lower`` [R] / ``init_witness`` [R, *in]: values already attained (e.g. sampling).
    ``project`` maps box centres into X when the boxes cover more than X (l_2 / l_1 balls).
    ``split_weight`` [*in] scales the widths when choosing the coordinate to halve;
    ``focus_max`` certifies max_r U_r only (see :meth:`Anytime.target`); ``stop_below`` /
    ``groups``: proof goals (see :class:`Anytime`).
    """
    proj = project or (lambda t: t)
    run = Anytime(timeout, rtol, atol, max_domains, focus_max, stop_below, groups)
    lo_q, up_q = lower.unsqueeze(0), upper.unsqueeze(0)
    t_root = time.perf_counter()
    ub_q = bound_fn(lo_q, up_q)
    run.child_time = time.perf_counter() - t_root  # the root's cost estimates a child's
    L, W = init_lower.clone(), init_witness.clone()
    L, W = _attain(attain_fn, proj, lo_q, up_q, L, W)
    pruned = torch.full_like(L, -torch.inf)
    bounded = 1
    with bar(progress=progress, desc=desc, unit="dom") as pbar:
        while True:
            U = torch.maximum(ub_q.max(0).values if len(ub_q) else pruned, pruned)
            status = run.stop(U, L, ub_q, batch, pbar)
            if status is not None:
                break
            t_step = time.perf_counter()
            gap = run.gaps(ub_q, L)
            pick = gap.topk(run.pops(batch, len(ub_q))).indices
            keep = torch.ones(len(ub_q), dtype=torch.bool, device=ub_q.device)
            keep[pick] = False
            parents_ub = ub_q[pick]
            clo, cup = _split(lo_q[pick], up_q[pick], split_weight)
            cub = torch.minimum(bound_in_chunks(bound_fn, clo, cup, n=len(clo)),
                                parents_ub.repeat(2, 1))
            bounded += len(clo)
            pbar.update(len(clo))
            L, W = _attain(attain_fn, proj, clo, cup, L, W)
            alive = run.alive(cub, L)
            if (~alive).any():
                pruned = torch.maximum(pruned, cub[~alive].max(0).values)
                run.drop(cub[~alive])
            lo_q = torch.cat([lo_q[keep], clo[alive]])
            up_q = torch.cat([up_q[keep], cup[alive]])
            ub_q = torch.cat([ub_q[keep], cub[alive]])
            run.child_time = (time.perf_counter() - t_step) / len(clo)
    U = torch.maximum(ub_q.max(0).values if len(ub_q) else pruned, pruned)
    return BabResult(U, L, W, status, bounded, tuple(run.trace), run.proven(ub_q))


def _attain(attain_fn: AttainFn, project: Callable[[Tensor], Tensor], lo: Tensor, up: Tensor,
            L: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
    """Update the attained values with the (projected) centres of new boxes."""
    pts = project((lo + up) / 2)
    vals = attain_fn(pts)  # [N, R]
    best, idx = vals.max(0)
    better = best > L
    W = W.clone()
    W[better] = pts[idx[better]].to(W.dtype)
    return torch.where(better, best.to(L.dtype), L), W
