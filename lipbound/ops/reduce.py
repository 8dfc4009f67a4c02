"""Reductions and broadcasts: sum / mean over dims, expand, centring, pairwise differences,
max over dims and its Clarke derivative.

Linear ones (``sum``, ``expand``, ``center``, ``pairwise_diff``) derive IBP, CROWN and their
Jacobian rule (the transpose) from the linear map. ``pairwise_diff`` and ``center`` are single
nodes on purpose: as one affine map of x, their interval images keep the cancellations
(``x_i - x_i = 0``, ``x_i - mean(x)``) that a chain of separate nodes would lose.

``reduce_max`` (min is ``-max(-x)``) is relaxed like max pooling: with k* the element of
largest lower bound in its group, ``max >= x_k*``, and ``max <= x_k*`` when l_k* >= u_j for
every other j, else ``max <= max_j u_j``. Its Clarke derivative ``reduce_max_grad(z, a)``
routes a to the maximiser (a convex combination over the candidates that can be maximal when
the maximiser is not decided); see :mod:`lipbound.ops.pool_grad` for the same bound on windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval, sum_elements
from lipbound.bounds.rounding import Precision
from lipbound.graph.ir import Node, freeze
from lipbound.ops.base import LinearOp, NonlinearOp, Params
from lipbound.ops.facts import GATE, JacobianRule
from lipbound.ops.pool_grad import Routing, route_backward
from lipbound.ops.pooling import PoolSelection
from lipbound.ops.registry import register
from lipbound.ops.tracing import (
    Var,
    broadcast,
    converts,
    per_sample_shape,
    reduction_dims,
    unsupported,
    where_of,
)


def _bdims(params: Params) -> list[int]:
    """The reduced per-sample dims as dims of the batched tensor."""
    return [d + 1 for d in params["dims"]]


def _count(params: Params, shape: Sequence[int]) -> int:
    return math.prod(shape[d] for d in params["dims"])


class ReduceSum(LinearOp):
    """y = scale * sum of x over per-sample ``dims`` (``keepdim``); mean is scale 1/n.
    ``matmul``: the node sums the products of a matrix product of two activations (counts
    TensorFloat-32 operand rounding on CUDA like a matmul)."""

    kind = "sum"
    exact_sums = True

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        n = _count(params, in_shapes[0])
        return n + (0 if float(params.get("scale", 1.0)) == 1.0 else 1)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        s = float(params.get("scale", 1.0))
        y = x.sum(_bdims(params), keepdim=bool(params.get("keepdim", False)))
        return y * (abs(s) if absolute else s) if s != 1.0 else y

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        s = float(params.get("scale", 1.0))
        if not params.get("keepdim", False):
            for d in sorted(_bdims(params)):
                A = A.unsqueeze(d)
        g = A.expand(A.shape[0], *in_shapes[0])
        return (g * s if s != 1.0 else g,)

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision) -> Tensor:
        e = super().float_error(params, errs, mags, prec)
        if params.get("matmul") and prec.u_operand:  # operands rounded before they multiply
            w = 2 * prec.u_operand + prec.u_operand ** 2
            e = e + w * (1 + w) * self.magnitude(params, *mags)
        return e


class Expand(LinearOp):
    """Broadcast x to per-sample ``shape`` (same number of dims; size-1 dims repeat)."""

    kind = "expand"
    exact_sums = True

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return x.expand(x.shape[0], *params["shape"])

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        dims = [i + 1 for i, (a, b) in enumerate(zip(in_shapes[0], params["shape"]))
                if a == 1 and b != 1]
        return (A.sum(dims, keepdim=True) if dims else A,)


class Center(LinearOp):
    """y = x - mean(x) over per-sample ``dims`` (symmetric: its own transpose)."""

    kind = "center"

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        return _count(params, in_shapes[0]) + 2

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        dims = _bdims(params)
        if not absolute:
            return x - x.mean(dims, keepdim=True)
        n = _count(params, x.shape[1:])
        # |I - 11^T / n| has 1 - 1/n on the diagonal and 1/n elsewhere
        return x * (1.0 - 2.0 / n) + x.mean(dims, keepdim=True) if n > 1 else x * 0.0

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        return (self.apply_linear(params, A),)


class PairwiseDiff(LinearOp):
    """[..., K] -> [..., K, K]: y[..., i, j] = x_j - x_i (zero on the diagonal)."""

    kind = "pairwise_diff"

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        return 1

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        if not absolute:
            return x.unsqueeze(-2) - x.unsqueeze(-1)
        K = x.shape[-1]
        off = 1 - torch.eye(K, dtype=x.dtype, device=x.device)
        return (x.unsqueeze(-2) + x.unsqueeze(-1)) * off

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        return (A.sum(-2) - A.sum(-1),)


# --------------------------------------------------------------------------- max over dims
def _groups(params: Params, x: Tensor, lead: int) -> Tensor:
    """x [*lead, *shape] -> [*lead, M, K]: kept dims flattened to M, reduced dims to K."""
    nd = x.dim() - lead
    red = [lead + d for d in params["dims"]]
    keep = [d for d in range(lead, lead + nd) if d not in red]
    y = x.permute(*range(lead), *keep, *red)
    K = math.prod(x.shape[d] for d in red)
    return y.reshape(*x.shape[:lead], -1, K)


def _ungroup(params: Params, g: Tensor, shape: Sequence[int], lead: int) -> Tensor:
    """Inverse of :func:`_groups`: [*lead, M, K] -> [*lead, *shape]."""
    nd = len(shape)
    red = list(params["dims"])
    keep = [d for d in range(nd) if d not in red]
    perm_shape = [shape[d] for d in keep + red]
    y = g.reshape(*g.shape[:lead], *perm_shape)
    order = keep + red
    inv = [order.index(d) for d in range(nd)]
    return y.permute(*range(lead), *[lead + i for i in inv])


def _out_shape(params: Params, in_shape: Sequence[int]) -> tuple[int, ...]:
    red = set(params["dims"])
    if params.get("keepdim", False):
        return tuple(1 if d in red else s for d, s in enumerate(in_shape))
    return tuple(s for d, s in enumerate(in_shape) if d not in red)


def _select(lw: Tensor, uw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(one-hot of k*, dominance, best lower bound, candidates) from grouped bounds [.., K]."""
    kstar = lw.argmax(-1, keepdim=True)
    onehot = torch.zeros_like(lw).scatter_(-1, kstar, 1.0)
    best = lw.gather(-1, kstar)
    others = uw.masked_fill(onehot.bool(), -math.inf).max(-1).values
    dominant = best.squeeze(-1) >= others
    cand = torch.where(dominant.unsqueeze(-1), onehot.bool(), uw >= best)
    return onehot, dominant, best, cand


class ReduceMax(NonlinearOp):
    """y = max of x over per-sample ``dims`` (``keepdim``)."""

    kind = "reduce_max"
    exact_interval = True
    differentiable = True

    def jacobian_rule(self, params: Params, index: int) -> JacobianRule:
        """``reduce_max_grad(z, g)``: g routed to each group's maximiser."""
        return JacobianRule(GATE, "reduce_max_grad", params)

    def naive_factor(self, params: Params, p: float) -> float:
        """1-Lipschitz per group in every l_p, and the groups are disjoint: 1."""
        return 1.0

    def apply(self, params: Params, x: Tensor) -> Tensor:
        return x.amax(_bdims(params), keepdim=bool(params.get("keepdim", False)))

    def ibp(self, params: Params, iv: Interval) -> Interval:
        return Interval(self.apply(params, iv.lower), self.apply(params, iv.upper))

    def float_error(self, params: Params, errs, mags, prec) -> Tensor:
        """Exact comparisons: |max(x + e) - max(x)| <= max |e| over the group."""
        return self.apply(params, errs[0])

    def magnitude(self, params: Params, *mags: Tensor, **_) -> Tensor:
        return self.apply(params, mags[0])

    def relax(self, params: Params, iv: Interval, opt: Mapping[str, Tensor] | None = None
              ) -> PoolSelection:
        lo, up = iv.lower.squeeze(1), iv.upper.squeeze(1)
        lw, uw = _groups(params, lo, 1), _groups(params, up, 1)
        onehot, dominant, _, _ = _select(lw, uw)
        return PoolSelection(onehot, dominant, uw.max(-1).values, tuple(lo.shape[1:]))

    def crown_backward(self, params: Params, A: Tensor, rel: PoolSelection):
        B, S = A.shape[:2]
        a = A.reshape(B, S, -1, 1)  # one coefficient per group (output element order)
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        dom = rel.dominant.unsqueeze(1).unsqueeze(-1)
        coef = (neg + pos * dom) * rel.onehot.unsqueeze(1)  # [B, S, M, K]
        bias = sum_elements(pos * (~dom) * rel.max_upper.unsqueeze(1).unsqueeze(-1))
        return (_ungroup(params, coef, rel.in_shape, 2),), bias


class ReduceMaxGrad(NonlinearOp):
    """The Clarke derivative of ``reduce_max`` applied to a cotangent: (z, a) -> g [*z]
    with g = a at the maximiser of each group (a convex combination over ties), 0 elsewhere.
    params: those of the forward ``reduce_max``."""

    kind = "reduce_max_grad"

    def apply(self, params: Params, z: Tensor, a: Tensor) -> Tensor:
        zw = _groups(params, z, 1)
        onehot = torch.zeros_like(zw).scatter_(-1, zw.argmax(-1, keepdim=True), 1.0)
        return _ungroup(params, onehot * a.reshape(a.shape[0], -1, 1), z.shape[1:], 1)

    def _routing(self, params: Params, z: Interval, a: Interval) -> Routing:
        lw, uw = _groups(params, z.lower, 1), _groups(params, z.upper, 1)
        _, dominant, _, cand = _select(lw, uw)
        B = lw.shape[0]
        al, au = a.lower.reshape(a.lower.shape[0], -1), a.upper.reshape(a.upper.shape[0], -1)
        al, au = al.expand(B, al.shape[1]), au.expand(B, au.shape[1])
        return Routing(cand, dominant, al, au, tuple(z.lower.shape[1:]),
                       tuple(a.lower.shape[1:]))

    def ibp(self, params: Params, z: Interval, a: Interval) -> Interval:
        B = max(z.lower.shape[0], a.lower.shape[0])
        z = Interval(z.lower.expand(B, *z.lower.shape[1:]), z.upper.expand(B, *z.upper.shape[1:]))
        r = self._routing(params, z, a)
        dom = r.dominant.unsqueeze(-1)
        lo_c = torch.where(dom, r.a_lower.unsqueeze(-1), r.a_lower.clamp(max=0).unsqueeze(-1))
        up_c = torch.where(dom, r.a_upper.unsqueeze(-1), r.a_upper.clamp(min=0).unsqueeze(-1))
        zero = torch.zeros_like(lo_c)
        lo = torch.where(r.candidates, lo_c, zero)
        up = torch.where(r.candidates, up_c, zero)
        return Interval(_ungroup(params, lo, r.in_shape, 1), _ungroup(params, up, r.in_shape, 1))

    def relax(self, params: Params, z: Interval, a: Interval,
              opt: Mapping[str, Tensor] | None = None) -> Routing:
        zl, zu = z.lower.squeeze(1), z.upper.squeeze(1)
        al, au = a.lower.squeeze(1), a.upper.squeeze(1)
        B = max(zl.shape[0], al.shape[0])
        zl, zu = zl.expand(B, *zl.shape[1:]), zu.expand(B, *zu.shape[1:])
        return self._routing(params, Interval(zl, zu), Interval(al, au))

    def crown_backward(self, params: Params, A: Tensor, rel: Routing):
        """<A, g> over group m is a_m t with t a convex combination of A over the
        candidates: at most max(a t_max, a t_min), bounded by its chord in a."""
        return route_backward(_groups(params, A, 2), rel, -1)  # Aw [B, S, M, K]


for _op in (ReduceSum(), Expand(), Center(), PairwiseDiff(), ReduceMax(), ReduceMaxGrad()):
    register(_op)


# -- ATen converters (lipbound.ops.tracing)

@converts("aten.sum.dim_IntList")
def _sum(b, fx, x, dims=None, keepdim=False, dtype=None):
    b.add(fx, "sum", [x], {"dims": reduction_dims(fx, x, dims), "keepdim": bool(keepdim),
                           "scale": 1.0})


def _mean_any(b, fx, x, dims, keepdim=False):
    d = reduction_dims(fx, x, dims)
    n = 1
    for i in d:
        n *= x.shape[i]
    b.add(fx, "sum", [x], {"dims": d, "keepdim": bool(keepdim), "scale": 1.0 / n})


@converts("aten.mean.dim")
def _mean(b, fx, x, dims, keepdim=False, dtype=None):
    nd = len(x.shape) + 1
    dims = sorted(d % nd for d in dims)
    if len(x.shape) != 3 or dims != [2, 3]:
        return _mean_any(b, fx, x, dims, keepdim)
    pooled = b.add(fx, "avg_pool", [x], {"kernel_size": tuple(x.shape[1:]), "stride":
                                         tuple(x.shape[1:]), "padding": 0, "ceil_mode": False,
                                         "count_include_pad": True, "divisor_override": None,
                                         "ndim": 2}, shape=(x.shape[0], 1, 1))
    if not keepdim:
        b.nodes.append(Node(fx.name + "_squeeze", "reshape", (pooled.name,), (x.shape[0],),
                            freeze({"shape": (x.shape[0],)}), where_of(fx)))
        b.vars[fx.name] = Var(fx.name + "_squeeze", (x.shape[0],))


@converts("aten.amax.default")
def _amax(b, fx, x, dims=(), keepdim=False):
    b.add(fx, "reduce_max", [x], {"dims": reduction_dims(fx, x, dims), "keepdim": bool(keepdim)})


@converts("aten.amin.default")
def _amin(b, fx, x, dims=(), keepdim=False):
    """min(x) = -max(-x)."""
    neg = {"scale": torch.tensor(-1.0, dtype=torch.float64), "shift": None}
    nx = b.aux(fx, "neg", "scale_shift", [x], x.shape, neg)
    params = {"dims": reduction_dims(fx, x, dims), "keepdim": bool(keepdim)}
    shape = per_sample_shape(fx) if not isinstance(fx.meta.get("val"), tuple) \
        else tuple(int(s) for s in fx.meta["val"][0].shape[1:])
    m = b.aux(fx, "max", "reduce_max", [nx], shape, params)
    return b.add(fx, "scale_shift", [m], neg, shape=shape)


@converts("aten.max.dim")
def _max_dim(b, fx, x, dim, keepdim=False):
    shape = tuple(int(s) for s in fx.meta["val"][0].shape[1:])
    params = {"dims": reduction_dims(fx, x, dim), "keepdim": bool(keepdim)}
    var = b.add(fx, "reduce_max", [x], params, shape=shape)
    b.vars[fx.name] = (var, None)


@converts("aten.min.dim")
def _min_dim(b, fx, x, dim, keepdim=False):
    var = _amin(b, fx, x, dim, keepdim)
    b.vars[fx.name] = (var, None)


@converts("aten.expand.default")
def _expand(b, fx, x, size, implicit=False):
    shape = per_sample_shape(fx)
    if len(x.shape) > len(shape):
        raise unsupported(fx, "expand cannot drop dimensions")
    b.alias(fx, broadcast(b, fx, x, shape, "e"))
