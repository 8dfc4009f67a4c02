"""Proving regions safe: certified output bounds on the rows of their unsafe conjunctions.

A disjunct ``C y <= d`` of a region is *refuted* when some row ``j`` has a certified lower bound
of ``C_j f(x)`` over the whole box above ``d_j``; the region is safe once all its disjuncts are.

- :func:`refute` bounds one region's box with ``lipbound.output_bounds`` (the box as an l_inf
  ball around its centre, clipped to the box itself by ``data_range``).
  Under method "bab" it is the one search of :mod:`lipbound.bab.search` with proof goals
  (:func:`lipbound.prove_outputs`, one goal per disjunct) and any brancher: relu signs,
  input halves (the input-splitting stage of :func:`lipbound.verify.verify`) or both.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lipbound.api import DEFAULT_BAB_TIMEOUT, output_bounds, prove_outputs
from lipbound.io.vnnlib import InputRegion, stack_conjunctions


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
           in_shape: tuple[int, ...], timeout: float | None = None, *, split: str = "auto",
           witness_check=None) -> tuple[list[int], Tensor | None]:
    """The disjuncts among ``ids`` that certified ``method`` bounds refute over the box, and
    (method "bab") the search's attained points [M, n], candidate counterexamples.
    ``split`` / ``witness_check``: the search's brancher and its counterexample hook (see
    :func:`lipbound.prove_outputs`).

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
                            else max(timeout, 1e-3), split=split, progress=False,
                            witness_check=witness_check)
        lower, proven, points = res.lower, res.proven.cpu(), res.points
    else:
        points = None
        lower, _ = output_bounds(model, x0, eps, spec=C, method=method, data_range=data_range)
        proven = torch.zeros(len(with_rows), dtype=torch.bool)
    above = lower.reshape(-1).cpu().to(torch.float64) > d
    done = [i for k, i in enumerate(with_rows) if bool(proven[k]) or bool(above[owner == k].any())]
    return done, None if points is None else points.reshape(points.shape[0], -1)
