"""Rounding allowances of a bound computation (the model of :mod:`lipbound.bounds.rounding`).

Two graph walks, each asking every op for its facts:

- :func:`execution_error`: a bound on |float forward pass - real function| at every node of
  the model's *unrewritten* graph (the operations the user's forward pass really performs),
  from the op's :meth:`~lipbound.ops.base.Op.float_error` rule and magnitudes taken from
  sound intervals of the node values; :func:`spec_execution_error` bounds ``C`` times that
  error by the smaller of this walk's bound and :mod:`lipbound.propagate.error_flow`, which
  follows each node's own rounding back from the spec rows with signs;
- :func:`compute_allowance`: the first-order allowance for lipbound's own rounding in the
  compute dtype: ``SAFETY * gamma_N(u) * M`` with M the absolute-value network's magnitude
  (:meth:`~lipbound.ops.base.Op.magnitude`) and N a generous count of the rounded operations
  along the longest chain (every element an op reads or writes, plus the relaxation's own);
  CROWN bounds that carry their own tally (:mod:`lipbound.propagate.own_rounding`) skip it.

:func:`finish_outputs`, :func:`finish_elements` and :func:`finish_norms` apply them to output
bounds, Jacobian element bounds and gradient-norm bounds and round the results outward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import SAFETY, Precision, gamma, outward, unit_roundoff
from lipbound.graph.ir import CONST, INPUT, Graph
from lipbound.ops import registry
from lipbound.propagate.error_flow import error_flow
from lipbound.propagate.ibp import evaluate_fixed

#: rounded operations a relaxation adds per node (slopes, intercepts, products with them)
RELAXATION_OPS = 8


def execution_error(raw: Graph, x: Interval, prec: Precision,
                    known: Callable[[str], Interval | None] = lambda name: None) -> Tensor:
    """Bound [B, *out] on |forward pass in precision ``prec`` - real function| at the output
    of ``raw``, for every input in the box ``x`` (the cast of the input to the model's dtype
    included). ``known(name)`` gives sound intervals of nodes (tighter than IBP's), or None.

    Ops whose rounding depends on where their input lies (``interval_facts``: log, 1/x,
    rsqrt, the fused kernels of composite nodes; ``error_uses_intervals``: ReLU, whose
    stably negative inputs pass no error) get the intervals of their inputs; composite
    nodes also get ``inner``, the intervals of the nodes of their lowering (from ``known``,
    else from CROWN over the lowered graph: IBP alone loses the variance of a LayerNorm)."""
    return error_walk(raw, x, prec, known)[1][raw.output]


def error_walk(raw: Graph, x: Interval, prec: Precision,
                known: Callable[[str], Interval | None]
                ) -> tuple[dict[str, Interval], dict[str, Tensor]]:
    """(intervals of the exact values, forward-pass error bounds) of every node of ``raw``
    (:func:`execution_error`)."""
    fixed = evaluate_fixed(raw)
    ivs: dict[str, Interval] = {}
    errs: dict[str, Tensor] = {}
    tight: dict[str, Interval] | None = None
    needs = _needs_intervals(raw, fixed)
    for n in raw.nodes:
        if n.op == INPUT:
            ivs[n.name], errs[n.name] = x, prec.u * x.abs_max()
            continue
        if n.op == CONST:
            ivs[n.name] = Interval.point(fixed[n.name])
            errs[n.name] = torch.zeros_like(fixed[n.name])
            continue
        op = registry.get(n.op, n.where)
        ins = [ivs[s] for s in n.inputs]
        iv = Interval.point(fixed[n.name]) if n.name in fixed else op.ibp(n.params, *ins)
        better = known(n.name)
        if better is None and needs and n.name not in fixed:  # IBP alone can explode here
            if tight is None:
                tight = tight_intervals(raw, x)
            better = tight.get(n.name)
        ivs[n.name] = iv if better is None else iv.intersect(better)
        mags = [ivs[s].abs_max() + errs[s] for s in n.inputs]
        use = op.interval_facts or op.error_uses_intervals
        kw: dict = {"ivals": [ivs[s] for s in n.inputs]} if use else {}
        if hasattr(op, "lower"):
            inner = {}
            for m in op.lower(n, [raw[s].shape for s in n.inputs]):
                iv = known(m.name)
                if iv is None:
                    if tight is None:
                        tight = tight_intervals(raw, x)
                    iv = tight.get(m.name)
                if iv is not None:
                    inner[m.name[len(n.name) + 2:] if m.name != n.name else "out"] = iv
            kw["inner"] = inner
        errs[n.name] = op.float_error(n.params, [errs[s] for s in n.inputs], mags, prec, **kw)
    return ivs, errs


def spec_execution_error(raw: Graph, x: Interval, prec: Precision, C: Tensor,
                         known: Callable[[str], Interval | None] = lambda name: None
                         ) -> Tensor:
    """Bound [B, S] on |C (forward pass in precision ``prec`` - real function)| at the
    output of ``raw`` over the box ``x``: the smaller of :func:`execution_error` times |C|
    and :func:`~lipbound.propagate.error_flow.error_flow`, which follows every node's own
    rounding to the output with signs (the forward walk multiplies absolute values layer
    after layer)."""
    ivs, errs = error_walk(raw, x, prec, known)
    forward = errs[raw.output].flatten(1).to(C.dtype) @ C.abs().T
    flow = error_flow(raw, prec, C.to(forward.dtype), ivs, errs)
    return torch.minimum(forward, torch.nan_to_num(flow, nan=math.inf))  # 0 * inf: no bound


def magnitudes(graph: Graph, x: Interval, target: str) -> tuple[Tensor, int]:
    """(M, N): the absolute-value network's magnitude at ``target`` over inputs in ``x``
    ([B, *shape]) and the rounded-operation count of the longest chain that reaches it."""
    fixed = evaluate_fixed(graph)
    mags: dict[str, Tensor] = {}
    count: dict[str, int] = {}
    ivs = _interval_images(graph, x, fixed)
    backward = _backward_nodes(graph)
    values = (ivs or _ibp_images(graph, x, fixed, skip=backward)) if backward else {}
    for n in graph.nodes:
        if n.op == INPUT:
            mags[n.name], count[n.name] = x.abs_max(), 0
            continue
        if n.name in fixed:
            mags[n.name], count[n.name] = fixed[n.name].abs(), 0
            continue
        op = registry.get(n.op, n.where)
        use = op.needs_intervals(n.params) or (op.interval_aware and ivs)
        kw = {"ivals": [ivs[s] for s in n.inputs]} if use else {}
        m = op.magnitude(n.params, *[mags[s] for s in n.inputs], **kw)
        if n.name in values and n.name not in backward:
            # a Jacobian graph's forward values enter its backward part only through
            # derivatives and products: their sound value bounds are the magnitudes there
            m = torch.minimum(m, values[n.name].abs_max().expand_as(m))
        mags[n.name] = m
        touched = sum(graph[s].numel for s in n.inputs) + n.numel
        count[n.name] = max(count[s] for s in n.inputs) + touched + RELAXATION_OPS
    return mags[target], count[target]


def tight_intervals(graph: Graph, x: Interval) -> dict[str, Interval]:
    """CROWN bounds (intersected with IBP) of the forward nodes of ``graph`` (those that read
    no ``const`` node, i.e. all but a Jacobian graph's backward part) over the box ``x``;
    composite nodes are lowered first (their lowered nodes get bounds too)."""
    from lipbound.bounds.domains import Box
    from lipbound.graph.normalize import lower_composites
    from lipbound.propagate.driver import prepare_state

    graph = lower_composites(graph)
    backward = _backward_nodes(graph)
    fwd = tuple(n for n in graph.nodes if n.name not in backward)
    sub = Graph(fwd, graph.input, fwd[-1].name)
    with torch.no_grad():
        state = prepare_state(sub, Box(x.lower, x.upper), "crown")
    return state.bounds


def _backward_nodes(graph: Graph) -> set[str]:
    """Const nodes and the nodes that read one (a Jacobian graph's backward part)."""
    backward: set[str] = set()
    for n in graph.nodes:
        if n.op == CONST or any(s in backward for s in n.inputs):
            backward.add(n.name)
    return backward


def _needs_intervals(graph: Graph, fixed: Mapping[str, Tensor]) -> bool:
    """Whether the graph has ops whose rounding facts need intervals (``interval_facts``) or
    products of two forward values (attention, gating), whose magnitudes chain."""
    backward = _backward_nodes(graph)
    for n in graph.nodes:
        if n.op in (INPUT, CONST) or n.name in fixed:
            continue
        op = registry.get(n.op, n.where)
        if op.needs_intervals(n.params) or (op.interval_aware and n.name not in backward):
            return True
    return False


def _interval_images(graph: Graph, x: Interval, fixed: Mapping[str, Tensor]
                     ) -> dict[str, Interval]:
    """Sound intervals of the nodes over ``x`` for ops whose magnitude needs them (log, 1/x,
    exp: ``interval_facts``) or improves with them (products of forward values), IBP
    intersected with CROWN bounds of the forward nodes (on a
    deep graph IBP alone can make rsqrt's slope or exp's value explode); empty when the graph
    has no such op."""
    if not _needs_intervals(graph, fixed):
        return {}
    return _ibp_images(graph, x, fixed, tight_intervals(graph, x))


def _ibp_images(graph: Graph, x: Interval, fixed: Mapping[str, Tensor],
                tight: Mapping[str, Interval] | None = None,
                skip: frozenset[str] | set[str] = frozenset()) -> dict[str, Interval]:
    """IBP intervals of the nodes over ``x`` (intersected with ``tight`` where given), except
    the nodes in ``skip`` and those that read them."""
    ivs: dict[str, Interval] = {}
    for n in graph.nodes:
        if n.op == INPUT:
            ivs[n.name] = x
        elif n.name in fixed:
            ivs[n.name] = Interval.point(fixed[n.name])
        elif n.name not in skip and all(s in ivs for s in n.inputs):
            iv = registry.get(n.op, n.where).ibp(n.params, *[ivs[s] for s in n.inputs])
            ivs[n.name] = iv if tight is None or n.name not in tight \
                else iv.intersect(tight[n.name])
    return ivs


def compute_allowance(graph: Graph, x: Interval, target: str, dtype: torch.dtype) -> Tensor:
    """Per-element allowance [B, *shape(target)] for the rounding of a bound computation of
    node ``target`` in ``dtype``: ``SAFETY * gamma_N(u) * M`` (:func:`magnitudes`)."""
    m, n = magnitudes(graph, x, target)
    return SAFETY * gamma(n, unit_roundoff(dtype)) * m


def finish_outputs(lower: Tensor, upper: Tensor, C: Tensor, graph: Graph, raw: Graph,
                   x: Interval, prec: Precision,
                   known: Mapping[str, Interval] | None = None,
                   own_included: bool = False) -> tuple[Tensor, Tensor]:
    """Output bounds ([S], or [B, S] for a batch of input sets ``x``) of C f widened to contain
    the real function and the forward pass in ``prec`` (``raw``: the unrewritten graph), with
    an allowance for the rounding of their own computation in ``lower.dtype`` unless
    ``own_included`` (bounds that carry it already: CROWN's per-step tally,
    :mod:`lipbound.propagate.own_rounding`); NaN or overflowing bounds raise
    :class:`InputError`."""
    known = known or {}
    allowance = spec_execution_error(raw, x, prec, C, known.get)
    if not own_included:
        own = compute_allowance(graph, x, graph.output, lower.dtype).flatten(1)
        allowance = allowance + own.to(C.dtype) @ C.abs().T
    if lower.dim() == 1:
        allowance = allowance[0]
    return outward(lower, upper, allowance)


def finish_elements(lower: Tensor, upper: Tensor, joint: Graph, gradient: str, x: Interval
                    ) -> tuple[Tensor, Tensor]:
    """Jacobian element bounds (shaped like the joint graph's gradient node, [B, *in], or
    flattened to [B, n]) widened for their computation's rounding (the bounds are of the
    real-arithmetic Clarke Jacobian)."""
    allowance = compute_allowance(joint, x, gradient, lower.dtype)
    return outward(lower, upper, allowance.reshape(lower.shape))


def finish_norms(upper: Tensor, joint: Graph, gradient: str, x: Interval, q: float) -> Tensor:
    """Gradient-norm upper bounds [S] widened for rounding: the element allowance a adds at
    most ||a||_q (triangle inequality) and the norm's own evaluation a relative gamma_n."""
    a = compute_allowance(joint, x, gradient, upper.dtype).flatten(1)
    a_norm = torch.linalg.vector_norm(a, ord=q, dim=1).to(upper.dtype)
    rel = SAFETY * gamma(a.shape[1] + RELAXATION_OPS, unit_roundoff(upper.dtype))
    return outward(upper, upper, upper.abs() * rel + a_norm)[1]
