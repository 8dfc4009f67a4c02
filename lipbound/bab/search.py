"""The one best-first anytime branch-and-bound loop of lipbound, over a brancher interface.

A *domain* is an input sub-box [lo, up] together with sign splits of some ReLU / LeakyReLU
pre-activations (z_i >= 0 or z_i <= 0, closed). An *objective* (:class:`Objective`: Lipschitz
rows, output rows and proof goals, the monotonicity audit's derivative bounds) maximises R
quantities ``phi_r`` over the input set X:

- ``bound`` gives ``ub[d, r] >= sup phi_r`` over the points of X in domain d (every domain of
  a batch in one propagation), with the per-layer forward bounds and branching scores;
- ``attain`` gives ``phi_r`` at points of X (box centres, LP points): attained lower bounds;
- ``lp_point`` decides whether any input of a box produces a domain's signs (MLPs), dropping
  empty domains and giving an attained point otherwise.

A :class:`Brancher` splits each popped domain: input halves (``"input"``), a ReLU sign
(``"relu"``) or either per domain (``"mixed"``: input halves while they tighten the bound,
then the signs of the unstable neurons whose relaxation remains; a low-dimensional problem
must converge near ReLU kinks, which input halves alone cannot). Children cover their parent
(closed halves; the two signs of a neuron), and a child is a subset of its parent, so its
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
#: brancher "mixed": a domain's input halves must lower its gap by this fraction (relative)
#: for the next split to halve its box again; otherwise it splits signs from then on
MIXED_GAIN = 0.1
#: brancher "mixed": domains with at most this many unstable unsplit neurons split signs
MIXED_OPEN = 2


class Objective(Protocol):
    """What the search maximises (see the module doc). ``names``: the split nodes (empty for
    networks without ReLU / LeakyReLU); ``final_when_fixed``: a domain with every neuron
    fixed is bounded exactly (its bound is attained in it), so it leaves the queue."""

    names: list[str]
    desc: str
    final_when_fixed: bool

    def bound(self, signs: list[Tensor], parent_ub: Tensor | None = None,
              threshold: float | None = None, boxes: tuple[Tensor, Tensor] | None = None
              ) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]: ...

    def attain(self, pts: Tensor) -> Tensor: ...

    def project(self, pts: Tensor) -> Tensor: ...

    def lp_allowed(self, elapsed: float) -> bool: ...

    def lp_point(self, los: list[Tensor], ups: list[Tensor], sg: list[Tensor],
                 time_limit: float, margin: bool = False,
                 box: tuple[Tensor, Tensor] | None = None) -> Tensor | None | bool: ...


@dataclass
class Frontier:
    """Queued domains, batch-first: boxes lo/up [N, n] (flat inputs), signs, forward bounds
    and scores per split layer [N, m_i], bounds ub [N, R] and the last input split's gain [N]."""

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
    """Neurons whose activation kink (z = 0 for ReLU / LeakyReLU) lies strictly inside their
    forward bounds and that no split fixes: the ones whose relaxation a sign split removes."""
    return (lo < 0) & (up > 0) & (sg == 0)


def fixed(lo: Tensor, up: Tensor, sg: Tensor) -> Tensor:
    """Neurons whose activation piece is one on the whole domain: split, or strictly on one
    side of the kink (a bound at the kink leaves both pieces' derivatives in the Clarke set)."""
    return (sg != 0) | (lo > 0) | (up < 0)


def pick_neuron(lo: list[Tensor], up: list[Tensor], sg: list[Tensor],
                score: list[Tensor]) -> tuple[int, int] | None:
    """The unstable unsplit neuron of the earliest such layer with the largest score
    (splitting earlier layers first also tightens later forward bounds); None if none."""
    for li, (a, b, s, sc) in enumerate(zip(lo, up, sg, score)):
        unst = unstable(a, b, s)
        if unst.any():
            return li, int(torch.where(unst, sc, -torch.inf).argmax())
    return None


def halve(lo: Tensor, up: Tensor, j: int) -> tuple[Tensor, Tensor]:
    """The two closed halves of the box [lo, up] ([n] each) along coordinate j, stacked [2, n]
    (lower, upper): they cover the box and share the face x_j = mid."""
    mid = (lo[j] + up[j]) / 2
    lo2, up2 = lo.repeat(2, 1), up.repeat(2, 1)
    up2[0, j] = mid
    lo2[1, j] = mid
    return lo2, up2


def sign_children(sg: list[Tensor], li: int, j: int) -> list[list[Tensor]]:
    """The two sign sets of a split of neuron j of layer li (z >= 0, then z <= 0)."""
    out = []
    for sign in (1.0, -1.0):
        child = [t.clone() for t in sg]
        child[li][j] = sign
        out.append(child)
    return out


@dataclass(frozen=True)
class Brancher:
    """How a domain is split: ``mode`` "input" (halve the box along the coordinate with the
    largest weighted width, ``weight`` [n] or None), "relu" (the sign of
    :func:`pick_neuron`'s neuron) or "mixed" (see :meth:`choose`)."""

    mode: str
    weight: Tensor | None = None
    min_width: float = 0.0

    def coordinate(self, lo: Tensor, up: Tensor) -> int | None:
        """The coordinate to halve, or None when the box is too thin to split."""
        width = up - lo
        if float(width.max()) <= self.min_width:
            return None
        w = width if self.weight is None else width * self.weight
        return int(w.argmax())

    def choose(self, fr: Frontier, d: int) -> tuple[str, object] | None:
        """("input", j), ("relu", (layer, neuron)) or None (nothing left to split)."""
        lo, up = fr.lo[d], fr.up[d]
        flo, fup = [t[d] for t in fr.flo], [t[d] for t in fr.fup]
        sg, sc = [t[d] for t in fr.signs], [t[d] for t in fr.score]
        neuron = pick_neuron(flo, fup, sg, sc) if self.mode != "input" else None
        if self.mode == "relu" or (self.mode == "mixed" and neuron is not None and (
                float(fr.gain[d]) < MIXED_GAIN or _open_count(flo, fup, sg) <= MIXED_OPEN)):
            return None if neuron is None else ("relu", neuron)
        j = self.coordinate(lo, up)
        return None if j is None else ("input", j)


def _open_count(flo: list[Tensor], fup: list[Tensor], sg: list[Tensor]) -> int:
    return sum(int(unstable(a, b, s).sum()) for a, b, s in zip(flo, fup, sg))


def _children(fr: Frontier, d: int, how: tuple[str, object]
              ) -> tuple[Tensor, Tensor, list[list[Tensor]]]:
    """Boxes [2, n] and sign sets of the two children of domain d."""
    lo, up, sg = fr.lo[d], fr.up[d], [t[d] for t in fr.signs]
    kind, arg = how
    if kind == "input":
        lo2, up2 = halve(lo, up, int(arg))
        return lo2, up2, [sg, sg]
    li, j = arg
    return lo.repeat(2, 1), up.repeat(2, 1), sign_children(sg, li, j)


def _root(obj: Objective, lo: Tensor, up: Tensor, R: int) -> Frontier:
    dev, dt = lo.device, lo.dtype
    flat_lo, flat_up = lo.flatten()[None], up.flatten()[None]
    signs = [torch.zeros(1, m, device=dev, dtype=dt) for m in obj.widths]
    ub, flo, fup, sc = obj.bound(signs, boxes=(flat_lo, flat_up))
    return Frontier(flat_lo, flat_up, signs, flo, fup, sc, ub.reshape(1, R),
                    torch.full((1,), torch.inf, device=dev, dtype=dt))


def _better(L: Tensor, W: Tensor, pts: Tensor, vals: Tensor) -> tuple[Tensor, Tensor]:
    """Attained values updated with the values [N, R] at points [N, *in]."""
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
    L, W = _better(L, W, *_centres(obj, fr.lo, fr.up, lo.shape))
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
            kids, pts, done = _expand(obj, brancher, fr, pick, keep, L, run, done)
            if pts:
                L, W = _better(L, W, torch.cat(pts), obj.attain(torch.cat(pts)))
            fr = fr.take(keep)
            if kids is None:
                continue
            clo, cup, csg, parents, pgain, inp = kids
            thr = LAZY_ROWS * float(U.max()) if run.focus_max else None
            cub, cflo, cfup, csc = bound_in_chunks(_bound, obj, csg, parents, thr, clo, cup,
                                                   n=len(clo))
            cub = torch.minimum(cub, parents)
            bounded += len(clo)
            pbar.update(len(clo))
            if bool(inp.any()):
                L, W = _better(L, W, *_centres(obj, clo[inp], cup[inp], lo.shape))
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
           lo: Tensor, up: Tensor):
    return obj.bound(signs, parents, thr, boxes=(lo, up))


def _centres(obj: Objective, lo: Tensor, up: Tensor, shape) -> tuple[Tensor, Tensor]:
    """The box centres [N, *in], projected into X, and their values."""
    pts = obj.project(((lo + up) / 2).reshape(lo.shape[0], *shape))
    return pts, obj.attain(pts)


def _gain(run: Anytime, parents: Tensor, cub: Tensor, L: Tensor, inp: Tensor,
          pgain: Tensor) -> Tensor:
    """Per child, the relative drop of its gap below its parent's (input children; sign
    children keep their parent's, so a domain whose halves stopped helping splits signs)."""
    gp, gc = run.gaps(parents, L), run.gaps(cub, L)
    drop = torch.where(gp > 0, (gp - gc) / gp.clamp_min(1e-300), torch.zeros_like(gp))
    drop = torch.where(torch.isfinite(drop), drop, torch.ones_like(drop))
    return torch.where(inp, drop, pgain)


def _pattern_known(flo: list[Tensor], fup: list[Tensor], sg: list[Tensor], split: bool,
                   x: Tensor | bool) -> bool:
    """Whether the domain fixes every neuron's piece and, if it has splits, the LP found a
    point with its signs (an undetected empty pattern must be split further, not kept)."""
    every = all(bool(fixed(a, b, s).all()) for a, b, s in zip(flo, fup, sg))
    return every and (not split or isinstance(x, Tensor))


def _lp_budget(obj: Objective, run: Anytime, n_open: int, n_lp: int) -> bool:
    """Whether a domain with ``n_open`` open neurons gets an LP this step (``n_lp`` so far)."""
    return obj.lp_allowed(run.elapsed()) and n_open <= LP_MAX_OPEN and (
        n_lp < LP_PER_STEP or n_open <= LP_ALWAYS_OPEN)


def _expand(obj: Objective, brancher: Brancher, fr: Frontier, pick: Tensor, keep: Tensor,
            L: Tensor, run: Anytime, done: Tensor):
    """LP checks and splits of the popped domains ``pick``: (children or None, attained LP
    points, updated ``done``). Domains not processed (time up) go back (``keep``)."""
    boxes_lo, boxes_up, signs, parents, gains, inputs, pts = [], [], [], [], [], [], []
    n_lp = 0
    for d in pick.tolist():
        left = run.timeout - run.elapsed()
        if left <= 0:
            keep[d] = True
            continue
        flo, fup = [t[d] for t in fr.flo], [t[d] for t in fr.fup]
        sg = [t[d] for t in fr.signs]
        split = any(bool(s.any()) for s in sg)
        n_open = _open_count(flo, fup, sg)
        use_lp = split and _lp_budget(obj, run, n_open, n_lp)
        n_lp += int(use_lp)
        box = (fr.lo[d], fr.up[d])
        x = obj.lp_point(flo, fup, sg, min(left, LP_TIME_LIMIT), box=box) if use_lp else True
        if x is None:  # no input of the domain's box has these signs: drop it
            run.drop(torch.full_like(fr.ub[d:d + 1], -torch.inf))
            continue
        if x is not True:  # True: undecided (time limit) or not asked
            pts.append(x)
        how = brancher.choose(fr, d)
        if how is None and split and x is True and getattr(obj, "lp_enabled", False):
            keep[d] = True  # a leaf whose LP was rationed or undecided: retried later
            continue
        if how is None or (obj.final_when_fixed and _pattern_known(flo, fup, sg, split, x)):
            if use_lp and bool((fr.ub[d] > run.target(L)).any()):  # attain it inside
                x = obj.lp_point(flo, fup, sg, min(left, LP_TIME_LIMIT), margin=True, box=box)
                if x is not None and x is not True:
                    pts.append(x)
            done = torch.maximum(done, fr.ub[d])
            run.drop(fr.ub[d:d + 1])
            continue
        lo2, up2, sg2 = _children(fr, d, how)
        boxes_lo.append(lo2)
        boxes_up.append(up2)
        signs += sg2
        parents += [fr.ub[d], fr.ub[d]]
        gains += [fr.gain[d], fr.gain[d]]
        inputs += [how[0] == "input"] * 2
    if not signs:
        return None, pts, done
    dev = fr.ub.device
    csg = [torch.stack([k[i] for k in signs]) for i in range(len(fr.signs))]
    kids = (torch.cat(boxes_lo), torch.cat(boxes_up), csg, torch.stack(parents),
            torch.stack(gains), torch.tensor(inputs, device=dev))
    return kids, pts, done
