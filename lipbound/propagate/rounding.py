"""Rounding allowances of a bound computation (the model of :mod:`lipbound.bounds.rounding`).

Two graph walks, each asking every op for its facts:

- :func:`execution_error`: a bound on |float forward pass - real function| at every node of
  the model's *unrewritten* graph (the operations the user's forward pass really performs),
  from the op's :meth:`~lipbound.ops.base.Op.float_error` rule and magnitudes taken from
  sound intervals of the node values;
- :func:`compute_allowance`: the first-order allowance for lipbound's own rounding in the
  compute dtype: ``SAFETY * gamma_N(u) * M`` with M the absolute-value network's magnitude
  (:meth:`~lipbound.ops.base.Op.magnitude`) and N a generous count of the rounded operations
  along the longest chain (every element an op reads or writes, plus the relaxation's own).

:func:`finish_outputs`, :func:`finish_elements` and :func:`finish_norms` apply them to output
bounds, Jacobian element bounds and gradient-norm bounds and round the results outward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import SAFETY, Precision, gamma, outward, unit_roundoff
from lipbound.errors import InputError
from lipbound.graph.ir import CONST, INPUT, Graph
from lipbound.ops import registry
from lipbound.propagate.state import evaluate_fixed

#: rounded operations a relaxation adds per node (slopes, intercepts, products with them)
RELAXATION_OPS = 8


def execution_error(raw: Graph, x: Interval, prec: Precision,
                    known: Callable[[str], Interval | None] = lambda name: None) -> Tensor:
    """Bound [B, *out] on |forward pass in precision ``prec`` - real function| at the output
    of ``raw``, for every input in the box ``x`` (the cast of the input to the model's dtype
    included). ``known(name)`` gives sound intervals of nodes (tighter than IBP's), or None."""
    fixed = evaluate_fixed(raw)
    ivs: dict[str, Interval] = {}
    errs: dict[str, Tensor] = {}
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
        ivs[n.name] = iv if better is None else iv.intersect(better)
        mags = [ivs[s].abs_max() + errs[s] for s in n.inputs]
        kw = {"ivals": ins} if op.interval_facts else {}
        errs[n.name] = op.float_error(n.params, [errs[s] for s in n.inputs], mags, prec, **kw)
    return errs[raw.output]


def magnitudes(graph: Graph, x: Interval, target: str) -> tuple[Tensor, int]:
    """(M, N): the absolute-value network's magnitude at ``target`` over inputs in ``x``
    ([B, *shape]) and the rounded-operation count of the longest chain that reaches it."""
    fixed = evaluate_fixed(graph)
    mags: dict[str, Tensor] = {}
    count: dict[str, int] = {}
    ivs = _interval_images(graph, x, fixed)
    for n in graph.nodes:
        if n.op == INPUT:
            mags[n.name], count[n.name] = x.abs_max(), 0
            continue
        if n.name in fixed:
            mags[n.name], count[n.name] = fixed[n.name].abs(), 0
            continue
        op = registry.get(n.op, n.where)
        kw = {"ivals": [ivs[s] for s in n.inputs]} if op.interval_facts else {}
        mags[n.name] = op.magnitude(n.params, *[mags[s] for s in n.inputs], **kw)
        touched = sum(graph[s].numel for s in n.inputs) + n.numel
        count[n.name] = max(count[s] for s in n.inputs) + touched + RELAXATION_OPS
    return mags[target], count[target]


def _interval_images(graph: Graph, x: Interval, fixed: Mapping[str, Tensor]
                     ) -> dict[str, Interval]:
    """IBP images of the nodes over ``x``, for ops whose magnitude needs them (log, 1/x:
    ``interval_facts``); empty when the graph has none."""
    ops = {n.name: registry.get(n.op, n.where) for n in graph.nodes
           if n.op not in (INPUT, CONST) and n.name not in fixed}
    if not any(op.interval_facts for op in ops.values()):
        return {}
    ivs: dict[str, Interval] = {}
    for n in graph.nodes:
        if n.op == INPUT:
            ivs[n.name] = x
        elif n.name in fixed:
            ivs[n.name] = Interval.point(fixed[n.name])
        else:
            ivs[n.name] = ops[n.name].ibp(n.params, *[ivs[s] for s in n.inputs])
    return ivs


def compute_allowance(graph: Graph, x: Interval, target: str, dtype: torch.dtype) -> Tensor:
    """Per-element allowance [B, *shape(target)] for the rounding of a bound computation of
    node ``target`` in ``dtype``: ``SAFETY * gamma_N(u) * M`` (:func:`magnitudes`)."""
    m, n = magnitudes(graph, x, target)
    return SAFETY * gamma(n, unit_roundoff(dtype)) * m


def finish_outputs(lower: Tensor, upper: Tensor, C: Tensor, graph: Graph, raw: Graph,
                   x: Interval, prec: Precision,
                   known: Mapping[str, Interval] | None = None) -> tuple[Tensor, Tensor]:
    """Output bounds ([S], or [B, S] for a batch of input sets ``x``) of C f widened to contain
    the real function and the forward pass in ``prec`` (``raw``: the unrewritten graph), with
    an allowance for the rounding of their own computation in ``lower.dtype``; NaN or
    overflowing bounds raise :class:`InputError`."""
    known = known or {}
    exec_err = execution_error(raw, x, prec, known.get).flatten(1)
    own = compute_allowance(graph, x, graph.output, lower.dtype).flatten(1)
    allowance = (exec_err + own).to(C.dtype) @ C.abs().T
    if lower.dim() == 1:
        allowance = allowance[0]
    return _checked(*outward(lower, upper, allowance), "output bounds")


def finish_elements(lower: Tensor, upper: Tensor, joint: Graph, gradient: str, x: Interval
                    ) -> tuple[Tensor, Tensor]:
    """Jacobian element bounds (shaped like the joint graph's gradient node, [B, *in], or
    flattened to [B, n]) widened for their computation's rounding (the bounds are of the
    real-arithmetic Clarke Jacobian)."""
    allowance = compute_allowance(joint, x, gradient, lower.dtype)
    return _checked(*outward(lower, upper, allowance.reshape(lower.shape)), "Jacobian bounds")


def finish_norms(upper: Tensor, joint: Graph, gradient: str, x: Interval, q: float) -> Tensor:
    """Gradient-norm upper bounds [S] widened for rounding: the element allowance a adds at
    most ||a||_q (triangle inequality) and the norm's own evaluation a relative gamma_n."""
    a = compute_allowance(joint, x, gradient, upper.dtype).flatten(1)
    a_norm = torch.linalg.vector_norm(a, ord=q, dim=1).to(upper.dtype)
    rel = SAFETY * gamma(a.shape[1] + RELAXATION_OPS, unit_roundoff(upper.dtype))
    up = outward(upper, upper, upper.abs() * rel + a_norm)[1]
    return _checked(up, up, "Lipschitz bounds")[1]


def _checked(lower: Tensor, upper: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """The bounds, or InputError when any is NaN or infinite (overflow: eps or data range too
    large for the model), so no non-finite value is ever reported as certified."""
    if not (bool(torch.isfinite(lower).all()) and bool(torch.isfinite(upper).all())):
        raise InputError(f"{what} overflow (NaN or inf): the input set is too large for this "
                         "model in floating point; use a smaller eps or data range")
    return lower, upper

