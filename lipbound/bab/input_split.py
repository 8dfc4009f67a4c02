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
verification: see :class:`lipbound.bab.anytime.Anytime`). Whatever the status, U is a
certified upper bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from lipbound.bab.anytime import Anytime, BabResult
from lipbound.bab.chunks import bound_in_chunks
from lipbound.progress import ProgressFlag, bar

BoundFn = Callable[[Tensor, Tensor], Tensor]  # (lower [N, *in], upper [N, *in]) -> ub [N, R]
AttainFn = Callable[[Tensor], Tensor]  # points [N, *in] inside X -> values [N, R]


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
