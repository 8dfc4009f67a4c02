"""The Clarke derivative of 2-d max pooling, applied to a cotangent: ``max_pool_grad(z, a)``.

Each window sends its cotangent a_l to the position of its maximum. For window l with input
bounds [l_j, u_j]: if some k* dominates (l_k* >= u_j for all other j) the routing is exact;
otherwise any candidate j (u_j >= max_i l_i) may receive it, and <A, g> restricted to the
window equals a_l t with t a convex combination of A over the candidates, so
``a t <= max(a t_max, a t_min)``, a convex function of a bounded above by its chord on
[l_a, u_a]. Windows are extracted with ``unfold`` and returned with ``fold``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lipbound.bounds.interval import Interval, sum_elements
from lipbound.ops.base import NonlinearOp, Params
from lipbound.ops.facts import POOL_GRAD
from lipbound.ops.pooling import _pair
from lipbound.ops.registry import get, register


@dataclass(frozen=True)
class Routing:
    """The possible maximisers of each output element (max-pool windows: candidates
    [B, C, K, L] (bool), dominant [B, C, L], bounds of a [B, C, L]; ``reduce_max`` groups:
    [B, M, K], [B, M], [B, M])."""

    candidates: Tensor
    dominant: Tensor
    a_lower: Tensor
    a_upper: Tensor
    in_shape: tuple[int, ...]
    a_shape: tuple[int, ...]


class MaxPoolGrad(NonlinearOp):
    """params: those of the forward max_pool."""

    kind = "max_pool_grad"
    window_rule = POOL_GRAD

    def _fold(self, params: Params, cols: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        C, H, W = in_shape
        ph, pw = _pair(params["padding"])
        full = F.fold(cols.reshape(cols.shape[0], -1, cols.shape[-1]), (H + 2 * ph, W + 2 * pw),
                      params["kernel_size"], dilation=params["dilation"],
                      stride=params["stride"])
        return full[..., ph:ph + H, pw:pw + W]

    def _unfold_zero(self, params: Params, A: Tensor) -> Tensor:
        ph, pw = _pair(params["padding"])
        cols = F.unfold(F.pad(A, (pw, pw, ph, ph)), params["kernel_size"],
                        dilation=params["dilation"], stride=params["stride"])
        return cols.reshape(A.shape[0], A.shape[1], -1, cols.shape[-1])

    def apply(self, params: Params, z: Tensor, a: Tensor) -> Tensor:
        w = get("max_pool").windows(params, z, float("-inf"))
        onehot = torch.zeros_like(w).scatter_(2, w.argmax(2, keepdim=True), 1.0)
        return self._fold(params, onehot * a.flatten(2).unsqueeze(2), tuple(z.shape[1:]))

    def _routing(self, params: Params, z: Interval, a: Interval) -> Routing:
        pool = get("max_pool")
        lw = pool.windows(params, z.lower, float("-inf"))
        uw = pool.windows(params, z.upper, float("-inf"))
        kstar = lw.argmax(2, keepdim=True)
        best_low = lw.gather(2, kstar)
        onehot = torch.zeros_like(lw).scatter_(2, kstar, 1.0).bool()
        others = uw.masked_fill(onehot, float("-inf")).max(2).values
        dominant = best_low.squeeze(2) >= others
        cand = torch.where(dominant.unsqueeze(2), onehot, uw >= best_low)
        return Routing(cand, dominant, a.lower.flatten(2), a.upper.flatten(2),
                       tuple(z.lower.shape[1:]), tuple(a.lower.shape[1:]))

    def ibp(self, params: Params, z: Interval, a: Interval) -> Interval:
        r = self._routing(params, z, a)
        dom = r.dominant.unsqueeze(2)
        lo_c = torch.where(dom, r.a_lower.unsqueeze(2), r.a_lower.clamp(max=0).unsqueeze(2))
        up_c = torch.where(dom, r.a_upper.unsqueeze(2), r.a_upper.clamp(min=0).unsqueeze(2))
        zero = torch.zeros_like(lo_c)
        lo = self._fold(params, torch.where(r.candidates, lo_c, zero), r.in_shape)
        up = self._fold(params, torch.where(r.candidates, up_c, zero), r.in_shape)
        return Interval(lo, up)

    def relax(self, params: Params, z: Interval, a: Interval,
              opt: Mapping[str, Tensor] | None = None) -> Routing:
        return self._routing(params, Interval(z.lower.squeeze(1), z.upper.squeeze(1)),
                             Interval(a.lower.squeeze(1), a.upper.squeeze(1)))

    def crown_backward(self, params: Params, A: Tensor, rel: Routing):
        B, S = A.shape[:2]
        Aw = self._unfold_zero(params, A.reshape(B * S, *A.shape[2:]))
        Aw = Aw.reshape(B, S, *Aw.shape[1:])  # [B, S, C, K, L]
        return route_backward(Aw, rel, 3)


def route_backward(Aw: Tensor, rel: Routing, dim: int):
    """Back-substitution through a routed cotangent: ``Aw`` [B, S, ...] holds A's entries
    over each output's K candidate maximisers along ``dim``; <A, g> for one output is a t with
    t a convex combination of them (the Clarke routing), at most max(a t_max, a t_min), which
    its chord in a bounds (exact when a's sign is fixed). Returns (None, slope on a), bias."""
    B, S = Aw.shape[:2]
    cand = rel.candidates.unsqueeze(1)
    tmax = Aw.masked_fill(~cand, float("-inf")).max(dim).values
    tmin = Aw.masked_fill(~cand, float("inf")).min(dim).values
    la, ua = rel.a_lower.unsqueeze(1), rel.a_upper.unsqueeze(1)
    mixed = (la < 0) & (ua > 0)
    w = torch.where(mixed, ua - la, torch.ones_like(ua))
    chord = (ua * tmax - la * tmin) / w
    slope = torch.where(la >= 0, tmax, torch.where(ua <= 0, tmin, chord))
    bias = torch.where(mixed, la * tmin - chord * la, torch.zeros_like(chord))
    return (None, slope.reshape(B, S, *rel.a_shape)), sum_elements(bias)


register(MaxPoolGrad())
