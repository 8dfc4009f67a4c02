"""Proving regions safe: certified output bounds on the rows of their unsafe conjunctions.

A disjunct ``C y <= d`` of a region is *refuted* when some row ``j`` has a certified lower bound
of ``C_j f(x)`` over the whole box above ``d_j``; the region is safe once all its disjuncts are.

- :func:`refute` bounds one region's box with ``lipbound.output_bounds`` (the box as an l_inf
  ball around its centre, clipped to the box itself by ``data_range``).
- :func:`split_prove` bisects a low-dimensional box (input splitting) and bounds the pieces in
  batches with CROWN until every piece is refuted, a piece's centre is a counterexample, or the
  deadline or the box budget runs out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lipbound.api import DEFAULT_BAB_TIMEOUT, output_bounds, prove_outputs
from lipbound.bounds.domains import Box
from lipbound.inputs import Traced, get_traced
from lipbound.io.vnnlib import InputRegion, stack_conjunctions
from lipbound.propagate.driver import bound_graph_spec, covers_own_rounding, prepare_state
from lipbound.propagate.rounding import finish_outputs
from lipbound.verify.deadline import Deadline
from lipbound.verify.falsify import Checker, model_dtype, violation


def box_as_ball(region: InputRegion, in_shape: tuple[int, ...]):
    """``(x0, eps, data_range)`` whose clipped l_inf ball is exactly the region's box.

    ``eps`` is inflated by a relative 1e-9 so that rounding in the centre cannot make the ball
    miss a corner; the clip to the box removes the excess.
    """
    lo, up = region.lower, region.upper
    x0 = ((lo + up) / 2).clamp(lo, up)
    eps = float(torch.maximum(up - x0, x0 - lo).max()) * (1 + 1e-9) + 1e-300
    return x0.reshape(in_shape), eps, (lo.reshape(in_shape), up.reshape(in_shape))


def refute(model: nn.Module, region: InputRegion, ids: list[int], method: str,
           in_shape: tuple[int, ...], timeout: float | None = None
           ) -> tuple[list[int], Tensor | None]:
    """The disjuncts among ``ids`` that certified ``method`` bounds refute over the box, and
    (method "bab") the search's attained points [M, n], candidate counterexamples.

    A disjunct (a conjunction of rows C_j f <= d_j) is refuted when some row's lower bound
    exceeds its d_j; under method "bab" (for ``timeout`` seconds) the row may differ between
    the search's sub-domains (:func:`lipbound.prove_outputs`, one goal per disjunct).
    Disjuncts without rows (every output unsafe) are never refuted.
    """
    with_rows = [i for i in ids if region.disjuncts[i].C.shape[0] > 0]
    if not with_rows:
        return [], None
    C, d, owner = stack_conjunctions([region.disjuncts[i] for i in with_rows])
    x0, eps, data_range = box_as_ball(region, in_shape)
    if method == "bab":
        res = prove_outputs(model, x0, eps, C, d, owner, data_range=data_range,
                            timeout=DEFAULT_BAB_TIMEOUT if timeout is None
                            else max(timeout, 1e-3), progress=False)
        lower, proven, points = res.lower, res.proven.cpu(), res.points
    else:
        points = None
        lower, _ = output_bounds(model, x0, eps, spec=C, method=method, data_range=data_range)
        proven = torch.zeros(len(with_rows), dtype=torch.bool)
    above = lower.reshape(-1).cpu().to(torch.float64) > d
    done = [i for k, i in enumerate(with_rows) if bool(proven[k]) or bool(above[owner == k].any())]
    return done, None if points is None else points.reshape(points.shape[0], -1)


def _crown_lower(traced: Traced, lo: Tensor, up: Tensor, C: Tensor) -> Tensor:
    """Certified lower bounds [B, M] of C f over the boxes [lo_b, up_b] (float64), for the
    real function and the model's forward pass (:mod:`lipbound.bounds.rounding`)."""
    box = Box(lo, up)
    state = prepare_state(traced.graph, box, "crown")
    lower, upper = bound_graph_spec(state, traced.graph.output, C.unsqueeze(0), "crown")
    return finish_outputs(lower, upper, C, traced.graph, traced.raw, box.interval(),
                          traced.precision, state.bounds,
                          covers_own_rounding(state, "crown"))[0]


def _split_dims(model: nn.Module, centers: Tensor, width: Tensor, C: Tensor,
                in_shape: tuple[int, ...]) -> Tensor:
    """Per box, the input to bisect: the largest ``max_j |d(C_j f)/dx_i| * width_i``."""
    if C.shape[0] > 16:
        return width.argmax(dim=1)
    x = centers.reshape(-1, *in_shape).to(model_dtype(model)).requires_grad_(True)
    y = model(x).reshape(x.shape[0], -1)
    score = torch.zeros_like(width)
    for j in range(C.shape[0]):
        (g,) = torch.autograd.grad((y @ C[j].to(y.dtype)).sum(), x, retain_graph=True)
        score = torch.maximum(score, g.reshape(width.shape).abs().double() * width)
    score = torch.where(width > 0, score + 1e-12 * width, torch.zeros_like(width))
    return score.argmax(dim=1)


def split_prove(model: nn.Module, region: InputRegion, ids: list[int],
                in_shape: tuple[int, ...], checker: Checker, deadline: Deadline, *,
                batch: int = 256, max_boxes: int = 200_000) -> tuple[str, object, dict]:
    """Input splitting on the region's box for the disjuncts ``ids``.

    Returns ``("proved", None, stats)`` when every piece refutes every disjunct in ``ids``,
    ``("sat", (x, y), stats)`` with a confirmed counterexample, ``("timeout", None, stats)`` at
    the deadline, or ``("unknown", None, stats)`` when more than ``max_boxes`` pieces are open.
    """
    disjuncts = [region.disjuncts[i] for i in ids]
    if any(c.C.shape[0] == 0 for c in disjuncts):
        return "unknown", None, {"boxes": 0}
    C, d, owner = stack_conjunctions(disjuncts)
    Ca, da, owner_a = region.spec() if region.disjuncts else (C, d, owner)
    nd = len(disjuncts)
    traced = get_traced(model, region.lower.reshape(1, *in_shape).to(model_dtype(model)),
                        torch.float64, region.lower.device)
    lo_q, up_q = region.lower.reshape(1, -1), region.upper.reshape(1, -1)
    mask_q = torch.ones(1, nd, dtype=torch.bool)
    bounded = 0
    while lo_q.shape[0]:
        if deadline.expired():
            return "timeout", None, {"boxes": bounded, "open": lo_q.shape[0]}
        if lo_q.shape[0] > max_boxes:
            return "unknown", None, {"boxes": bounded, "open": lo_q.shape[0]}
        lo, up, mask = lo_q[-batch:], up_q[-batch:], mask_q[-batch:]
        lo_q, up_q, mask_q = lo_q[:-batch], up_q[:-batch], mask_q[:-batch]
        lower = _crown_lower(traced, lo.reshape(-1, *in_shape), up.reshape(-1, *in_shape), C)
        bounded += lo.shape[0]
        row_ok = (lower.reshape(lo.shape[0], -1).cpu() > d).to(torch.int8)
        refuted = torch.zeros(lo.shape[0], nd, dtype=torch.int8).scatter_reduce(
            1, owner.unsqueeze(0).expand_as(row_ok), row_ok, reduce="amax").bool()
        mask = mask & ~refuted
        keep = mask.any(dim=1)
        lo, up, mask = lo[keep], up[keep], mask[keep]
        if not lo.shape[0]:
            continue
        centers = ((lo + up) / 2).clamp(lo, up)
        found = _check_centers(model, region, centers, Ca, da, owner_a, checker, in_shape)
        if found is not None:
            return "sat", found, {"boxes": bounded}
        dim = _split_dims(model, centers, up - lo, C, in_shape)
        rows = torch.arange(lo.shape[0])
        mid = centers[rows, dim]
        left_up, right_lo = up.clone(), lo.clone()
        left_up[rows, dim] = mid
        right_lo[rows, dim] = mid
        lo_q = torch.cat([lo_q, lo, right_lo])
        up_q = torch.cat([up_q, left_up, up])
        mask_q = torch.cat([mask_q, mask, mask])
    return "proved", None, {"boxes": bounded}


def _check_centers(model, region, centers, C, d, owner, checker, in_shape):
    with torch.no_grad():
        y = model(centers.reshape(-1, *in_shape).to(model_dtype(model)))
    v = violation(y.reshape(centers.shape[0], -1).double(), C, d, owner.unsqueeze(0),
                  len(region.disjuncts))
    for i in torch.argsort(v)[:2].tolist():
        if float(v[i]) > 1e-6:
            break
        found = checker.confirm(region, centers[i])
        if found is not None:
            return found
    return None
