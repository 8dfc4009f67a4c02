"""The one best-first anytime branch-and-bound loop of lipbound, over a brancher interface.

A *domain* is an input sub-box [lo, up] together with splits of some elements of the
objective's split points (:class:`~lipbound.graph.shapes.SplitPoint`: a node and a kink t of an
op reading it; ReLU / LeakyReLU inputs at t = 0, hardtanh / relu6 / clamp / hardsigmoid at
their limits, |.| at 0, hardswish at -3 and 3): sign +1 means z_i >= t, -1 means z_i <= t
(closed). An *objective* (:class:`Objective`: Lipschitz
rows, output rows and proof goals, the monotonicity audit's derivative bounds) maximises R
quantities ``phi_r`` over the input set X:

- ``bound`` gives ``ub[d, r] >= sup phi_r`` over the points of X in domain d (every domain of
  a batch in one propagation), with the forward bounds of every split point *relative to its
  kink* (z - t: the kink is at 0 in the search's frame) and the branching scores; children
  are bounded knowing their parent's forward bounds (valid on the child, a subset);
- ``attain`` gives ``phi_r`` at points of X (box centres, LP points): attained lower bounds;
- ``lp_point`` decides whether any input of a box produces a domain's signs (MLPs), dropping
  empty domains and giving an attained point otherwise.

A :class:`Brancher` splits each popped domain: input halves (``"input"``), a neuron at one of
its kinks (``"relu"``: a ReLU sign or any other kink split) or either per domain (``"mixed"``:
input halves while they tighten the bound, then the kinks of the unstable neurons whose
relaxation remains; a low-dimensional problem must converge near kinks, which input halves
alone cannot). Children cover their parent (closed halves; the two sides z <= t, z >= t of a
kink), and a child is a subset of its parent, so its
bound is min(child, parent). The loop keeps

    sup_X phi_r  <=  U_r := max( max_{d queued} ub[d, r], done[r] )

(``done``: the bounds of domains that left the queue: pruned, final or closed by goals; a
domain that the LP proves empty holds no point of X) and ``L_r`` = the best value attained at
a point of X, so L <= exact <= U at every step of the trace. The stopping rules, goals and
priorities are :class:`lipbound.bab.anytime.Anytime`'s. LPs are rationed by their share of
the search time (a slow LP leaves its domain to be split further; it never switches the
checks off).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from lipbound.bab.anytime import Anytime, BabResult
from lipbound.bab.chunks import bound_in_chunks
from lipbound.progress import ProgressFlag, bar

#: the LP feasibility check runs on domains with at most this many unstable unsplit neurons
#: (near the leaves, where it prunes; on wide layers an LP per domain costs more than it saves)
LP_MAX_OPEN = 32
#: per step, domains with more open neurons than LP_ALWAYS_OPEN get at most LP_PER_STEP LPs
#: (the largest gaps first); near the leaves, where it prunes, every domain gets one
LP_PER_STEP = 4
LP_ALWAYS_OPEN = 8
#: seconds per LP; an undecided LP (time limit) leaves its domain to be split further
LP_TIME_LIMIT = 1.0
#: with objective "max", children recompute only the spec rows whose parent bound is at least
#: this fraction of the current certified maximum (the others keep the parent's bound)
LAZY_ROWS = 0.5
#: brancher "mixed": a domain's input halves must lower its gap by more than this fraction
#: (relative) for the next split to halve its box again; otherwise it splits signs from then
#: on. Off (0): on family problems the first halves of a box often gain nothing (one
#: coordinate alone does not separate the patterns) and switching early cost 2-10x domains
MIXED_GAIN = 0.0
#: brancher "mixed": domains with at most this many unstable unsplit neurons split signs
#: (a box cut by one or two kink surfaces: halves would never remove their relaxation)
MIXED_OPEN = 2
#: brancher "relu": a step splits its popped domains at up to 1 + DEEPEN_LEVELS neurons each
#: while their children fit two per batch slot (:func:`deepen`)
DEEPEN_LEVELS = 5
#: ... and while the deepened step's estimated time (children x the last child time, the
#: root's time at the first step) stays within this many seconds: deepening saves the fixed
#: cost of a step, which matters where steps are short (small networks: milliseconds a
#: domain); where bounding costs per domain (mnistfc 256x2: 0.3-0.6 s a domain) it only
#: made steps long (the first step bounded 64 domains in 26 s of a 120 s budget, with no
#: point attained and nothing reported meanwhile)
DEEPEN_MAX_STEP = 2.0


class Objective(Protocol):
    """What the search maximises (see the module doc). ``names`` / ``widths``: the node and
    its element count per split point (a node with several kinks once per kink; empty for
    networks without kinks); the forward bounds ``bound`` returns are relative to each split
    point's kink; ``final_when_fixed``: a domain with every neuron fixed is bounded exactly
    (its bound is attained in it), so it leaves the queue."""

    names: list[str]
    widths: list[int]
    desc: str
    final_when_fixed: bool

    def bound(self, signs: list[Tensor], parent_ub: Tensor | None = None,
              threshold: float | None = None, boxes: tuple[Tensor, Tensor] | None = None,
              parent: tuple[list[Tensor], list[Tensor]] | None = None
              ) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]: ...

    def attain(self, pts: Tensor) -> Tensor: ...

    def project(self, pts: Tensor) -> Tensor: ...

    def lp_allowed(self, elapsed: float) -> bool: ...

    def lp_point(self, los: list[Tensor], ups: list[Tensor], sg: list[Tensor],
                 time_limit: float, margin: bool = False,
                 box: tuple[Tensor, Tensor] | None = None,
                 aim: tuple[Tensor, Tensor] | None = None) -> Tensor | None | bool: ...


@dataclass
class Frontier:
    """Queued domains, batch-first: boxes lo/up [N, n] (flat inputs), signs, forward bounds
    and scores per split point [N, m_i] (forward bounds relative to the point's kink), bounds
    ub [N, R] and the last input split's gain [N]."""

    lo: Tensor
    up: Tensor
    signs: list[Tensor]
    flo: list[Tensor]
    fup: list[Tensor]
    score: list[Tensor]
    ub: Tensor
    gain: Tensor

    def __len__(self) -> int:
        return self.ub.shape[0]

    def take(self, idx: Tensor) -> Frontier:
        """The domains ``idx`` (indices or a mask)."""
        return Frontier(self.lo[idx], self.up[idx], [s[idx] for s in self.signs],
                        [t[idx] for t in self.flo], [t[idx] for t in self.fup],
                        [t[idx] for t in self.score], self.ub[idx], self.gain[idx])

    def extend(self, other: Frontier) -> Frontier:
        cat = lambda a, b: [torch.cat([x, y]) for x, y in zip(a, b)]  # noqa: E731
        return Frontier(torch.cat([self.lo, other.lo]), torch.cat([self.up, other.up]),
                        cat(self.signs, other.signs), cat(self.flo, other.flo),
                        cat(self.fup, other.fup), cat(self.score, other.score),
                        torch.cat([self.ub, other.ub]), torch.cat([self.gain, other.gain]))


def unstable(lo: Tensor, up: Tensor, sg: Tensor) -> Tensor:
    """Neurons whose kink lies strictly inside their forward bounds and that no split fixes:
    the ones whose relaxation a split at the kink removes. ``lo`` / ``up`` are relative to the
    split point's kink t (z - t, as objectives return them), so the kink is at 0 here for
    ReLU signs and every other kink alike."""
    return (lo < 0) & (up > 0) & (sg == 0)


def fixed(lo: Tensor, up: Tensor, sg: Tensor) -> Tensor:
    """Neurons whose piece at this kink is one on the whole domain: split, or strictly on one
    side of the kink (a bound at the kink leaves both pieces' derivatives in the Clarke set);
    ``lo`` / ``up`` relative to the kink as in :func:`unstable`. A neuron with several kinks
    has one piece once it is fixed at each of them."""
    return (sg != 0) | (lo > 0) | (up < 0)


@dataclass(frozen=True)
class Brancher:
    """How a domain is split: ``mode`` "input" (halve the box along the coordinate with the
    largest weighted width, ``weight`` [n] or None, down to ``min_width``; a smaller box still
    cut by kinks splits at one, in every mode), "relu" (split at its kink the
    :func:`unstable` neuron of the earliest split point that has one, largest score first)
    or "mixed" (see :meth:`plan`). ``input_score`` (optional, replaces ``weight``): per
    popped domain, a score [N, n] per input coordinate from its box (lo, up) [N, n], e.g. a
    gradient smear; the box halves along the best coordinate of positive width."""

    mode: str
    weight: Tensor | None = None
    min_width: float = 0.0
    input_score: Callable[[Tensor, Tensor], Tensor] | None = None

    def plan(self, P: Frontier) -> Plan:
        """The split of each domain of ``P`` (vectorised over the batch)."""
        N, dev = len(P), P.ub.device
        unst = [unstable(a, b, sg) for a, b, sg in zip(P.flo, P.fup, P.signs)]
        n_open = sum((u.sum(1) for u in unst), torch.zeros(N, dtype=torch.long, device=dev))
        layer = torch.full((N,), -1, dtype=torch.long, device=dev)
        neuron = torch.zeros(N, dtype=torch.long, device=dev)
        for li, (u, sc) in enumerate(zip(unst, P.score)):  # earliest unstable, best score
            new = u.any(1) & (layer < 0)
            layer[new] = li
            neuron[new] = torch.where(u, sc, -torch.inf).argmax(1)[new]
        width = P.up - P.lo
        coord = self._coords(P.lo, P.up, width)
        halvable = width.amax(1) > self.min_width
        has = layer >= 0
        if self.mode == "relu":
            relu = has
        elif self.mode == "input":
            relu = torch.zeros_like(has)
        else:  # mixed: signs once halves stop paying or few neurons are left open
            relu = has & ((P.gain < MIXED_GAIN) | (n_open <= MIXED_OPEN))
        # a box too small to halve that kinks still cut splits at a kink (halves never
        # remove a relaxation there: where kinks cross, a box of any size keeps it)
        relu = relu | (has & ~halvable)
        inp = ~relu & halvable if self.mode != "relu" else torch.zeros_like(has)
        return Plan(relu, inp, layer, neuron, coord, n_open)

    def _coords(self, lo: Tensor, up: Tensor, width: Tensor) -> Tensor:
        """The coordinate to halve per domain [N]: the best ``input_score`` among those of
        positive width (ties and all-zero scores: the widest), else weighted width."""
        if self.input_score is None or self.mode == "relu":
            return (width if self.weight is None else width * self.weight).argmax(1)
        sc = torch.nan_to_num(self.input_score(lo, up).to(width.dtype), nan=0.0)
        sc = torch.where(width > 0, sc.clamp_min(0) + 1e-12 * width, -torch.inf)
        return sc.argmax(1)


@dataclass(frozen=True)
class Plan:
    """Per popped domain [N]: split at a kink (``relu``: neuron ``neuron`` of split point
    ``layer``) or halve the box (``inp``: along ``coord``); neither: nothing left to split.
    ``n_open``: unstable unsplit neurons (counted once per kink)."""

    relu: Tensor
    inp: Tensor
    layer: Tensor
    neuron: Tensor
    coord: Tensor
    n_open: Tensor


def children(P: Frontier, plan: Plan) -> Frontier:
    """The two children of every domain that ``plan`` splits (gains to be set by the caller;
    forward bounds and scores are the parent's until they are bounded): input halves first,
    then sign children."""
    hi, si = plan.inp.nonzero().flatten(), plan.relu.nonzero().flatten()
    rows = torch.arange(len(hi), device=P.ub.device)
    lo2, up2 = P.lo[hi].repeat(2, 1), P.up[hi].repeat(2, 1)
    mid = (P.lo[hi, plan.coord[hi]] + P.up[hi, plan.coord[hi]]) / 2
    up2[rows, plan.coord[hi]] = mid
    lo2[rows + len(hi), plan.coord[hi]] = mid
    take = torch.cat([hi, hi, si, si])
    sg = [t[take].clone() for t in P.signs]
    n_s = len(si)
    r = torch.arange(2 * n_s, device=P.ub.device) + 2 * len(hi)
    sign = torch.cat([torch.ones(n_s), -torch.ones(n_s)]).to(P.ub.device, P.lo.dtype)
    lay, neu = plan.layer[si].repeat(2), plan.neuron[si].repeat(2)
    for li in range(len(sg)):
        sel = lay == li
        sg[li][r[sel], neu[sel]] = sign[sel]
    kid = P.take(take)
    return Frontier(torch.cat([lo2, P.lo[si].repeat(2, 1)]),
                    torch.cat([up2, P.up[si].repeat(2, 1)]), sg, kid.flo, kid.fup, kid.score,
                    kid.ub, kid.gain)


def _root(obj: Objective, lo: Tensor, up: Tensor, R: int) -> Frontier:
    dev, dt = lo.device, lo.dtype
    flat_lo, flat_up = lo.flatten()[None], up.flatten()[None]
    signs = [torch.zeros(1, m, device=dev, dtype=dt) for m in obj.widths]
    ub, flo, fup, sc = obj.bound(signs, boxes=(flat_lo, flat_up))
    return Frontier(flat_lo, flat_up, signs, flo, fup, sc, ub.reshape(1, R),
                    torch.full((1,), torch.inf, device=dev, dtype=dt))


def _better(L: Tensor, W: Tensor, pts: Tensor, vals: Tensor, run: Anytime
            ) -> tuple[Tensor, Tensor]:
    """Attained values updated with the values [N, R] at points [N, *in] (which ``run``
    observes: :meth:`Anytime.observe`)."""
    run.observe(pts, vals)
    best, idx = vals.max(0)
    up = best > L
    W = W.clone()
    W[up] = pts[idx[up]].to(W.dtype).reshape(W[up].shape)
    return torch.where(up, best.to(L.dtype), L), W


def search(obj: Objective, brancher: Brancher, lo: Tensor, up: Tensor, L: Tensor, W: Tensor,
           run: Anytime, *, batch: int, progress: ProgressFlag = "auto") -> BabResult:
    """Best-first search over the domains of the box [lo, up] ([*in], covering X), maximising
    ``obj``'s R quantities; ``L`` [R] / ``W`` [R, *in]: values already attained and their points.

    Each step pops the domains with the largest gap (fewer when the time left fits fewer). A
    domain with split signs may get an LP (:func:`_lp_budget`): infeasible -> dropped,
    feasible -> its point is attained. :meth:`Brancher.choose` then splits it, or (nothing
    left to split) it is final and its bound goes to ``done``. Children are bounded in one
    batch and take min(child, parent); children that cannot raise any U_r above its target are
    pruned. U is certified at every stop (see the module doc).
    """
    R = L.shape[0]
    t_root = time.perf_counter()
    fr = _root(obj, lo, up, R)
    run.child_time = getattr(obj, "child_cost", None) or time.perf_counter() - t_root
    L, W = _better(L, W, *_centres(obj, fr.lo, fr.up, torch.ones(1, dtype=torch.bool,
                                                                   device=lo.device), lo.shape),
                   run)
    done = torch.full_like(L, -torch.inf)
    bounded = 1
    with bar(progress=progress, desc=obj.desc, unit="dom") as pbar:
        while True:
            U = torch.maximum(fr.ub.max(0).values if len(fr) else done, done)
            status = run.stop(U, L, fr.ub, 2 * batch, pbar)
            if status is not None:
                break
            t0 = time.perf_counter()
            pick = run.gaps(fr.ub, L).topk(run.pops(batch, len(fr))).indices
            keep = torch.ones(len(fr), dtype=torch.bool, device=fr.ub.device)
            keep[pick] = False
            kids, inp, pts, done = _expand(obj, brancher, fr, pick, keep, L, run, done,
                                            batch)
            if pts:
                L, W = _better(L, W, torch.cat(pts), obj.attain(torch.cat(pts)), run)
            fr = fr.take(keep)
            if kids is None:
                continue
            clo, cup, csg, parents, pgain = kids.lo, kids.up, kids.signs, kids.ub, kids.gain
            thr = LAZY_ROWS * float(U.max()) if run.focus_max else None
            cub, cflo, cfup, csc = bound_in_chunks(_bound, obj, csg, parents, thr, clo, cup,
                                                   kids.flo, kids.fup, n=len(clo))
            cub = torch.minimum(cub, parents)
            bounded += len(clo)
            pbar.update(len(clo))
            got = _centres(obj, clo, cup, inp, lo.shape)
            if got is not None:
                L, W = _better(L, W, *got, run)
            gain = _gain(run, parents, cub, L, inp, pgain)
            alive = torch.isfinite(cub).all(1) & run.alive(cub, L)
            dead = ~alive & torch.isfinite(cub).all(1)
            if dead.any():
                done = torch.maximum(done, cub[dead].max(0).values)
            run.drop(cub[~alive])
            fr = fr.extend(Frontier(clo, cup, csg, cflo, cfup, csc, cub, gain).take(alive))
            run.child_time = (time.perf_counter() - t0) / len(clo)
    U = torch.maximum(fr.ub.max(0).values if len(fr) else done, done)
    return BabResult(U, L, W, status, bounded, tuple(run.trace), run.proven(fr.ub))


def _bound(obj: Objective, signs: list[Tensor], parents: Tensor, thr: float | None,
           lo: Tensor, up: Tensor, flo: list[Tensor], fup: list[Tensor]):
    return obj.bound(signs, parents, thr, boxes=(lo, up), parent=(flo, fup))


def _centres(obj: Objective, lo: Tensor, up: Tensor, new: Tensor, shape
             ) -> tuple[Tensor, Tensor] | None:
    """The centres of the new boxes (mask ``new`` [N]) and an objective's ``box_points`` of
    every box (if it samples more), projected into X, and their values (None: no point)."""
    pts = ((lo[new] + up[new]) / 2)
    more = getattr(obj, "box_points", None)
    if more is not None:
        pts = torch.cat([pts, more(lo, up)])
    if pts.shape[0] == 0:
        return None
    pts = obj.project(pts.reshape(pts.shape[0], *shape))
    return pts, obj.attain(pts)


def _gain(run: Anytime, parents: Tensor, cub: Tensor, L: Tensor, inp: Tensor,
          pgain: Tensor) -> Tensor:
    """Per child, the relative drop of its gap below its parent's (input children; sign
    children keep their parent's, so a domain whose halves stopped helping splits signs)."""
    gp, gc = run.gaps(parents, L), run.gaps(cub, L)
    drop = torch.where(gp > 0, (gp - gc) / gp.clamp_min(1e-300), torch.zeros_like(gp))
    drop = torch.where(torch.isfinite(drop), drop, torch.ones_like(drop))
    return torch.where(inp, drop, pgain)


def _lp_budget(obj: Objective, run: Anytime, n_open: int, n_lp: int) -> bool:
    """Whether a domain with ``n_open`` open neurons gets an LP this step (``n_lp`` so far)."""
    return obj.lp_allowed(run.elapsed()) and n_open <= LP_MAX_OPEN and (
        n_lp < LP_PER_STEP or n_open <= LP_ALWAYS_OPEN)


def _expand(obj: Objective, brancher: Brancher, fr: Frontier, pick: Tensor, keep: Tensor,
            L: Tensor, run: Anytime, done: Tensor, batch: int):
    """LP checks and splits of the popped domains ``pick``: (children, a mask [2M] of input
    halves, or None; attained LP points; updated ``done``). Leaves whose signs the LP has not
    shown feasible (rationed or undecided) go back to the queue (``keep``)."""
    P = fr.take(pick)
    plan = brancher.plan(P)
    N, dev = len(P), P.ub.device
    split = torch.zeros(N, dtype=torch.bool, device=dev)
    for sg in P.signs:
        split |= (sg != 0).any(1)
    fixed_all = torch.ones(N, dtype=torch.bool, device=dev)
    for a, b, sg in zip(P.flo, P.fup, P.signs):
        fixed_all &= fixed(a, b, sg).all(1)
    feasible = torch.zeros(N, dtype=torch.bool, device=dev)
    gone = torch.zeros(N, dtype=torch.bool, device=dev)  # LP-infeasible
    pts, n_lp = [], 0
    lp_rows = split.nonzero().flatten().tolist()
    order = sorted(lp_rows, key=lambda d: int(plan.n_open[d]))  # leaves first
    for d in order:
        left = run.timeout - run.elapsed()
        if left <= 0 or not _lp_budget(obj, run, int(plan.n_open[d]), n_lp):
            continue
        n_lp += 1
        flo, fup = [t[d] for t in P.flo], [t[d] for t in P.fup]
        x = obj.lp_point(flo, fup, [t[d] for t in P.signs], min(left, LP_TIME_LIMIT),
                         box=(P.lo[d], P.up[d]), aim=run.lp_aim(P.ub[d], L))
        if x is None:
            gone[d] = True
        elif x is not True:
            feasible[d] = True
            pts.append(x)
    if gone.any():  # no input of the domain's box has these signs: dropped
        run.drop(torch.full_like(P.ub[gone], -torch.inf))
    nothing = ~plan.relu & ~plan.inp & ~gone
    retry = nothing & split & ~feasible & bool(getattr(obj, "lp_enabled", False))
    final = ~gone & ~retry & (nothing | (fixed_all & (~split | feasible) if obj.final_when_fixed
                                         else torch.zeros_like(nothing)))
    for d in final.nonzero().flatten().tolist():  # attain a final pattern strictly inside
        if feasible[d] and bool((P.ub[d] > run.target(L)).any()):
            left = run.timeout - run.elapsed()
            x = obj.lp_point([t[d] for t in P.flo], [t[d] for t in P.fup],
                             [t[d] for t in P.signs], min(max(left, 0.01), LP_TIME_LIMIT),
                             margin=True, box=(P.lo[d], P.up[d]))
            if x is not None and x is not True:
                pts.append(x)
    if final.any():
        done = torch.maximum(done, P.ub[final].max(0).values)
        run.drop(P.ub[final])
    keep[pick[retry]] = True
    go = ~gone & ~retry & ~final
    plan = Plan(plan.relu & go, plan.inp & go, plan.layer, plan.neuron, plan.coord,
                plan.n_open)
    if not bool((plan.relu | plan.inp).any()):
        return None, None, pts, done
    kids = children(P, plan)
    n_inp = 2 * int(plan.inp.sum())
    if brancher.mode == "relu" and len(kids) > n_inp:
        kids = kids.take(torch.arange(n_inp, device=dev)).extend(
            deepen(brancher, kids.take(torch.arange(n_inp, len(kids), device=dev)),
                   deepen_room(run, batch, len(kids)) - n_inp))
    inp = torch.zeros(len(kids), dtype=torch.bool, device=dev)
    inp[:n_inp] = True
    return kids, inp, pts, done


def deepen_room(run: Anytime, batch: int, n_kids: int) -> int:
    """How many children (``n_kids`` before deepening) a step may bound: two per batch slot
    that the time left fits, and no more than ``DEEPEN_MAX_STEP`` seconds hold at the last
    child time (never fewer than ``n_kids``)."""
    fits = int(DEEPEN_MAX_STEP / max(run.child_time, 1e-12))
    return min(2 * run.pops(batch, batch), max(fits, n_kids))


def deepen(brancher: Brancher, kids: Frontier, want: int) -> Frontier:
    """``kids`` (sign children, not yet bounded) split at further kinks, one more neuron per
    level on every domain that still has an unstable one by its parent's forward bounds,
    while the next level fits ``want`` domains. A step's bound costs nearly as much for a
    few domains as for a full batch (alpha/beta-CROWN iterations on the whole graph), so a
    small queue (the first steps, a few hard domains) fills the batch this way instead of
    spending a step per doubling. Every level's children cover their parent as in
    :func:`children` (each domain of a level is a subset of its popped ancestor, whose bound
    it takes as ``ub`` until bounded)."""
    for _ in range(DEEPEN_LEVELS):
        plan = brancher.plan(kids)
        more = plan.relu
        n_more = int(more.sum())
        if n_more == 0 or len(kids) + n_more > want:
            return kids
        rest = kids.take(~more)
        kids = children(kids, Plan(more, torch.zeros_like(more), plan.layer, plan.neuron,
                                   plan.coord, plan.n_open)).extend(rest)
    return kids
