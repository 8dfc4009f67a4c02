"""The bookkeeping of the anytime branch-and-bound search (:mod:`lipbound.bab.search`): the
result and trace types, the stopping rules (gap closed, proof goals met, time, domain cap), the
step sizing near the time limit and the domains' priorities."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class TracePoint:
    """The state of the search at ``time`` seconds: max_r U_r, max_r L_r, queued domains and
    every row's U_r."""

    time: float
    upper: float
    lower: float
    domains: int
    rows: tuple[float, ...] = ()


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
    With ``refute``, a goal of a single row r is *refuted* once a value attained at a point of
    the set reaches its threshold (L[r] >= stop_below[r]: no cover can prove it); it then
    counts as held on every domain (no domain is refined for it) and is never proven, and the
    search stops ("decided") once every goal is proven or refuted.

    Verification (``goals_only``): domains leave the queue only when closed (every goal
    holds there) or final, never because their bounds fall below the attained values (that
    prunes for a maximum, not for a goal whose rows are a conjunction), and the gap rule
    ("certified") does not stop the search. ``witness_check`` (optional) gets the attained
    points [N, *in] and their goal violation [N] (:meth:`violation`: <= 0 where some goal
    fails); when it returns True (it confirmed a counterexample), the search stops with
    status "counterexample".
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
    refute: bool = False
    refuted: Tensor | None = None  # [G]: refuted goals (``refute``)
    goals_only: bool = False
    witness_check: Callable[[Tensor, Tensor], bool] | None = None
    found: bool = False  # witness_check confirmed a counterexample

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
        held = (below @ self.members.to(ub.dtype)) > 0
        return held if self.refuted is None else held | self.refuted

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
        held = held if self.dropped_proven is None else held & self.dropped_proven
        return held if self.refuted is None else held & ~self.refuted

    def update_refuted(self, L: Tensor) -> None:
        """Mark the single-row goals whose row's attained value reached its threshold."""
        if not self.refute or self.stop_below is None:
            return
        M = self.members
        hit = ((L >= self.stop_below)[:, None] & M).any(0) & (M.sum(0) == 1)
        self.refuted = hit if self.refuted is None else self.refuted | hit

    def violation(self, vals: Tensor) -> Tensor:
        """[N]: min over goals of max over the goal's rows of (threshold - value) at points
        with values ``vals`` [N, R]; <= 0 exactly where some goal fails at the point."""
        margin = (self.stop_below - vals)[:, :, None]  # [N, R, 1]
        per_goal = torch.where(self.members[None], margin, -torch.inf).amax(1)  # [N, G]
        return per_goal.amin(1)

    def observe(self, pts: Tensor, vals: Tensor) -> None:
        """Hand attained points and their values to ``witness_check`` (if any)."""
        if self.witness_check is None or self.stop_below is None or self.found or not len(pts):
            return
        self.found = bool(self.witness_check(pts, self.violation(vals)))

    def alive(self, ub: Tensor, L: Tensor) -> Tensor:
        """Domains [N] with some row above its target (plus tolerance) that are not closed
        (``goals_only``: not closed)."""
        if self.goals_only:
            return ~self.closed(ub)
        open_rows = ub > _tolerance(self.target(L), self.rtol, self.atol)
        return open_rows.any(1) & ~self.closed(ub)

    def _need(self, ub: Tensor) -> Tensor:
        """[N, G] (goals only): per domain and goal, the smallest excess of the goal's rows
        over their thresholds (< 0: the goal holds there; -inf: refuted, needs nothing)."""
        M = self.members  # [R, G]
        excess = (ub - self.stop_below)[:, :, None].expand(-1, -1, M.shape[1])
        need = torch.where(M[None], excess, torch.inf).min(1).values
        if self.refuted is not None:
            need = torch.where(self.refuted[None], -torch.inf, need)
        return need

    def _row_gaps(self, ub: Tensor, L: Tensor) -> Tensor:
        """[N, R]: each row's relative gap to its target."""
        T = self.target(L)
        return (ub - T) / (T.abs() + self.atol)

    def gaps(self, ub: Tensor, L: Tensor) -> Tensor:
        """Priority [N]: the largest relative gap of a domain's rows to their targets; with
        goals, the largest over open goals of the smallest excess of a goal's rows over
        their thresholds (how far the domain is from holding that goal)."""
        if self.stop_below is not None:
            need = self._need(ub)
            return torch.where(need >= 0, need, -torch.inf).max(1).values
        return self._row_gaps(ub, L).max(1).values

    def lp_aim(self, ub: Tensor, L: Tensor) -> tuple[Tensor, Tensor] | None:
        """What a domain's LP point should aim at, as ``(rows [k], offsets [k])``: minimise
        max_i (offsets_i - value of row rows_i). With goals: the open goal of the domain
        (``ub`` [R]) farthest from holding, so that the point fails all its rows at once if it
        can (a counterexample); without: the row with the largest gap to its target, whose
        value the point should raise. None when every goal holds. A heuristic only: the
        point is re-scored on the model and the bounds do not depend on it."""
        if self.stop_below is None:
            r = self._row_gaps(ub[None], L)[0].argmax().reshape(1)
            return r, torch.zeros(1, dtype=ub.dtype, device=ub.device)
        need = self._need(ub[None])[0]
        if not bool((need >= 0).any()):
            return None
        rows = self.members[:, int(need.argmax())].nonzero().flatten()
        return rows, self.stop_below[rows]

    def stop(self, U: Tensor, L: Tensor, ub_q: Tensor, growth: int, pbar) -> str | None:
        """Record the state; the status to stop with, or None to go on. ``ub_q`` [N, R]:
        the queued domains' bounds; ``growth``: how many domains the next step can add."""
        queued = len(ub_q)
        self.trace.append(TracePoint(self.elapsed(), float(U.max()), float(L.max()), queued,
                                     tuple(U.tolist())))
        pbar.set_postfix(domains=queued, upper=f"{float(U.max()):.6g}",
                         lower=f"{float(L.max()):.6g}")
        if self.found:
            return "counterexample"
        self.update_refuted(L)
        proven = self.proven(ub_q)
        if proven is not None and bool(proven.all()):
            return "below threshold"
        if self.refuted is not None and bool((proven | self.refuted).all()):
            return "decided"
        if not self.goals_only and bool((U <= _tolerance(self.target(L), self.rtol,
                                                          self.atol)).all()):
            return "certified"
        if queued == 0:  # every domain final, yet the gap is open: bounds hold, not exact
            return "exhausted"
        if self.elapsed() + 2 * self.child_time >= self.timeout:  # not even one domain fits
            return "timeout"
        if queued + growth > self.max_domains:
            return "domain limit"
        return None
