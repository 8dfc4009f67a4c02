"""CROWN: backward linear bound propagation over a graph.

``crown_upper`` back-substitutes ``<A, v_target>`` through linear ops (exact transposes) and
nonlinear ops (their relaxations at the current intermediate bounds) down to the input and
concretises over the domain:  sup_{x in D_b} <A[b, s], v_target(x)> <= result[b, s].
Lower bounds are upper bounds of the negated rows. The intermediate bounds that the
relaxations read come from :mod:`lipbound.propagate.intermediate`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval, sum_elements
from lipbound.bounds.rounding import unit_roundoff
from lipbound.graph.ir import INPUT
from lipbound.ops import registry
from lipbound.ops.base import Relaxation
from lipbound.propagate import mixed, own_rounding, window_pool, windows
from lipbound.propagate.state import BoundState
from lipbound.propagate.windows import Cols, Sparse, Window


def relaxation(state: BoundState, name: str, opt: Mapping[str, Tensor] | None = None):
    """The relaxation of nonlinear node ``name`` at the current bounds (cached if opt is None)."""
    if opt is None and name in state.relax_cache:
        return state.relax_cache[name]
    node = state.graph[name]
    op = registry.get(node.op, node.where)
    ivals = [state.interval(s) for s in node.inputs]
    ivals = [Interval(v.lower.unsqueeze(1), v.upper.unsqueeze(1)) for v in ivals]
    rel = op.relax(node.params, *ivals, opt=opt)
    if opt is None:
        state.relax_cache[name] = rel
    return rel


def beta_key(name: str) -> str:
    """Key of the split multipliers of node ``name`` in an ``opt`` mapping."""
    return f"{name}#beta"


def box_key(name: str) -> str:
    """Key of the kink-split (box) multipliers of node ``name`` in an ``opt`` mapping."""
    return f"{name}#box"


def _box_term(state: BoundState, name: str, beta: Mapping[str, Tensor], Ac, dtype
              ) -> tuple[Tensor, Tensor]:
    """``Ac + beta_lo - beta_up`` and the constant ``sum(beta_up b - beta_lo a)`` [B, S] of
    the Lagrangian term ``beta_lo (v - a) + beta_up (b - v)``, non-negative inside the box
    [a, b] of node ``name`` (only its finite ends count)."""
    box = state.boxes[name]
    lo_f, up_f = torch.isfinite(box.lower).unsqueeze(1), torch.isfinite(box.upper).unsqueeze(1)
    blo = torch.where(lo_f, beta["beta_lo"], 0.0)
    bup = torch.where(up_f, beta["beta_up"], 0.0)
    a = torch.where(lo_f, box.lower.unsqueeze(1), 0.0).to(dtype)
    b = torch.where(up_f, box.upper.unsqueeze(1), 0.0).to(dtype)
    return windows.dense(Ac) + blo - bup, sum_elements(bup * b - blo * a)


def backsubstitute(state: BoundState, target: str, A: Tensor,
                   opt: Mapping[str, Mapping[str, Tensor]] | None = None,
                   tally: own_rounding.Tally | None = None) -> tuple[Tensor | None, Tensor]:
    """Linear upper bound of <A, v_target> in terms of the input.

    A: [B, S, *shape(target)]. Returns (A_x [B, S, *in], bias [B, S]) with
    <A, v_target(x)> <= <A_x, x> + bias for every x in the domain; A_x is None when the bound
    does not depend on x (e.g. gradient nodes whose relaxations are constant in x).
    ``opt`` may hold split multipliers under :func:`beta_key` (``{"beta": [B, S, *shape]}``,
    >= 0) for nodes with ``state.splits``: the term sum_j beta_j s_j v_j, non-negative on the
    split sub-domain (s_j v_j >= 0), is added to the objective there (beta-CROWN's Lagrangian),
    so the bound holds on the sub-domain and can be tighter than with clamping alone.
    Likewise multipliers under :func:`box_key` for nodes with ``state.boxes`` (kink splits).
    ``tally`` (:class:`~lipbound.propagate.own_rounding.Tally`) records what each rounded
    step can have cost.
    """
    g = state.graph
    B, S = A.shape[:2]
    pending: dict[str, Tensor | Sparse] = {target: A}
    ref = A.data if isinstance(A, (Window, Cols)) else A
    bias = torch.zeros(B, S, dtype=ref.dtype, device=ref.device)
    low = mixed.active(state, ref.dtype)
    if low:
        pending[target] = mixed.cast(A, state.coef_dtype)
    A_x = None
    for node in reversed(g.nodes[: g.position(target) + 1]):
        Ac = pending.pop(node.name, None)
        if Ac is None:
            continue
        if opt is not None and beta_key(node.name) in opt:
            split = state.splits[node.name].unsqueeze(1).to(ref.dtype)
            Ac = windows.dense(Ac) + opt[beta_key(node.name)]["beta"] * split
        if opt is not None and box_key(node.name) in opt:
            Ac, b = _box_term(state, node.name, opt[box_key(node.name)], Ac, ref.dtype)
            bias = bias + b
        if not state.dep[node.name]:
            val = state.fixed[node.name].unsqueeze(1)
            b = windows.dot(Ac, val.to(ref.dtype))  # float64 products and sum
            bias = bias + b
            if tally is not None:
                tally.fixed(Ac, val.to(ref.dtype))
                tally.bias(b)
            continue
        if node.op == INPUT:
            A_x = mixed.cast(windows.dense(Ac), ref.dtype) if low else windows.dense(Ac)
            continue
        op = registry.get(node.op, node.where)
        if low:
            parts, b = _low_step(state, node, op, Ac, ref.dtype,
                                 None if opt is None else opt.get(node.name))
        elif op.linear:
            parts, b = _linear_backward(g, node, op, Ac)
        else:
            parts, b = _nonlinear_backward(state, node, op, Ac,
                                           None if opt is None else opt.get(node.name))
        if tally is not None:
            with torch.no_grad():
                rel = None if op.linear else relaxation(
                    state, node.name, None if opt is None else opt.get(node.name))
            tally.step(node, op, Ac, rel)
            tally.bias(b)
        bias = bias + b
        for src, part in zip(node.inputs, parts):
            if part is None:
                continue
            prev = pending.get(src)
            pending[src] = part if prev is None else windows.add(prev, part)
            if tally is not None and prev is not None:
                tally.merge(src, pending[src])
            if low and prev is not None and mixed.coef_dtype_of(pending[src]) != ref.dtype:
                with torch.no_grad():  # a value only: the bias keeps its graph
                    rb = mixed.rounding_bias([prev, part], pending[src],
                                             *mixed.centre(state, src), g[src].numel,
                                             unit_roundoff(state.coef_dtype))
                bias = bias + rb
    return A_x, bias


def _low_step(state: BoundState, node, op, Ac, ref: torch.dtype, opt) -> tuple[list, Tensor]:
    """One back-substitution step with coefficients in ``state.coef_dtype`` and its float64
    bias in the centred form of :mod:`lipbound.propagate.mixed` (rounding allowance
    included); ops without the facts are stepped through in the state's dtype instead.
    Under optimisation the bias's value is the centred one and its gradient the plain
    float32 bias's (the centred correction is computed without autograd)."""
    low = state.coef_dtype
    u = unit_roundoff(low)
    rel = None if op.linear else relaxation(state, node.name, opt)
    facts = mixed.step_facts(state, node, op, rel, cache=opt is None)
    if facts is None:  # this step in the state's dtype
        Ac = mixed.cast(Ac, ref)
        if op.linear:
            return _linear_backward(state.graph, node, op, Ac)
        return _nonlinear_backward(state, node, op, Ac, opt)
    extra = None
    if mixed.coef_dtype_of(Ac) != low:  # rounded back from a float64 step (Lemma 3)
        A32 = mixed.cast(Ac, low)
        with torch.no_grad():
            extra = mixed.rounding_bias([Ac], A32, *mixed.centre(state, node.name),
                                        node.numel, u)
        Ac = A32
    if op.linear:
        cg = mixed.coef_graph(state)
        parts, b = _linear_backward(cg, cg[node.name], op, Ac)
    else:
        parts, b = _nonlinear_backward(state, node, op, Ac, opt,
                                       lambda r: mixed.cast_relaxation(r, low))
    b = b.to(ref)
    with torch.no_grad():
        n = op.backward_sum_terms(node.params, [state.graph[s].shape for s in node.inputs],
                                  node.shape)
        sound = mixed.step_bias(Ac, parts, *facts, n, node.numel, u)
        if extra is not None:
            sound = sound + extra
    return parts, sound if not b.requires_grad else b + (sound - b).detach()


def _nonlinear_backward(state: BoundState, node, op, Ac, opt, conv=None) -> tuple[list, Tensor]:
    """Back-substitution through a nonlinear op's relaxation (windowed coefficients keep
    their window through elementwise ops, whose relaxation is cropped to it); ``conv`` maps
    the relaxation to the coefficients' dtype (float32 coefficients)."""
    conv = conv or (lambda r: r)
    in_shapes = [state.graph[s].shape for s in node.inputs]
    if not windows.is_elementwise(op, node, in_shapes):
        rel = conv(relaxation(state, node.name, opt))
        if isinstance(Ac, Window) and op.window_rule is not None:
            out = window_pool.pool_backward(op, node.params, Ac, rel, in_shapes[-1])
            if out is not None:
                return out
        return op.crown_backward(node.params, windows.dense(Ac), rel)
    if isinstance(Ac, Window):
        if opt is None:
            rel = windows.crop_relaxation(relaxation(state, node.name), Ac)
        else:  # elementwise: the relaxation of the window's elements only
            ivals = [state.interval(s) for s in node.inputs]
            ivals = [Interval(Ac.crop(v.lower.unsqueeze(1)), Ac.crop(v.upper.unsqueeze(1)))
                     for v in ivals]
            rel = op.relax(node.params, *ivals, opt={k: Ac.crop(v) for k, v in opt.items()})
        return windows.elementwise_backward(op, node.params, Ac, conv(rel))
    return windows.elementwise_backward(op, node.params, windows.dense(Ac),
                                        conv(relaxation(state, node.name, opt)))


def _linear_backward(g, node, op, Ac) -> tuple[list, Tensor]:
    """Coefficients of a linear op's inputs and the bias its offset adds, [B, S] (or [1, S]).
    A coefficient shared by the whole batch (an expanded tensor, e.g. identity rows) is
    mapped once and expanded again, instead of once per batch element; windowed coefficients
    stay windowed where the op has a rule for them (:mod:`lipbound.propagate.windows`)."""
    in_shapes = [g[s].shape for s in node.inputs]
    if isinstance(Ac, (Window, Cols)):
        out = windows.linear_backward(node, op, in_shapes, Ac)
        if out is not None:
            return out
        Ac = windows.dense(Ac)
    shared = Ac.shape[0] > 1 and Ac.stride(0) == 0
    Ab = Ac[:1] if shared else Ac
    S = Ab.shape[1]
    flat = Ab.reshape(Ab.shape[0] * S, *node.shape)
    parts = op.vjp(node.params, flat, in_shapes)
    parts = [p.reshape(Ab.shape[0], S, *p.shape[1:]) for p in parts]
    off = op.offset(node.params)
    bias = sum_elements(Ab * off) if off is not None else Ab.new_zeros(Ab.shape[:2])
    if shared:
        parts = [p.expand(Ac.shape[0], *p.shape[1:]) for p in parts]
    return parts, bias


def crown_upper(state: BoundState, target: str, A: Tensor,
                opt: Mapping[str, Mapping[str, Tensor]] | None = None) -> Tensor:
    """sup over the domain of <A[b, s], v_target(x)>, as a sound upper bound [B, S]."""
    ref = A if isinstance(A, Tensor) else A.data
    tally = own_rounding.Tally(state, ref.dtype) if own_rounding.applies(state, ref.dtype) \
        else None
    if mixed.active(state, ref.dtype):
        with mixed.exact_float32_kernels(ref.device):
            A_x, bias = backsubstitute(state, target, A, opt)
    else:
        A_x, bias = backsubstitute(state, target, A, opt, tally)
    B = state.domain.batch_size
    if A_x is None:  # the bound is the constant bias on the whole domain
        up = bias.expand(B, -1) if bias.shape[0] == 1 else bias
    else:
        if A_x.shape[0] != B:
            A_x = A_x.expand(B, *A_x.shape[1:])
            bias = bias.expand(B, -1)
        up = state.domain.concretize_upper(A_x, bias)
    if tally is None:
        return up
    up = up + tally.finish(A_x, bias)
    last = up.detach()
    return up + (torch.nextafter(last, torch.full_like(last, math.inf)) - last)  # one ulp up


__all__ = ["Relaxation", "backsubstitute", "beta_key", "crown_upper", "relaxation"]
