"""CROWN: backward linear bound propagation over a graph.

``crown_upper`` back-substitutes ``<A, v_target>`` through linear ops (exact transposes) and
nonlinear ops (their relaxations at the current intermediate bounds) down to the input and
concretises over the domain:  sup_{x in D_b} <A[b, s], v_target(x)> <= result[b, s].
Lower bounds are upper bounds of the negated rows. ``crown_intermediate`` tightens the bounds
of every node a nonlinear op reads, in topological order, and intersects them with IBP.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.graph.ir import INPUT
from lipbound.ops import registry
from lipbound.ops.base import Relaxation
from lipbound.propagate.state import BoundState, identity_spec, nodes_needing_bounds

# rows of a spec processed together when bounding intermediate nodes (memory cap)
MAX_ELEMENTS_PER_CHUNK = 2**25


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


def backsubstitute(state: BoundState, target: str, A: Tensor,
                   opt: Mapping[str, Mapping[str, Tensor]] | None = None
                   ) -> tuple[Tensor, Tensor]:
    """Linear upper bound of <A, v_target> in terms of the input.

    A: [B, S, *shape(target)]. Returns (A_x [B, S, *in], bias [B, S]) with
    <A, v_target(x)> <= <A_x, x> + bias for every x in the domain.
    """
    g = state.graph
    B, S = A.shape[:2]
    pending: dict[str, Tensor] = {target: A}
    bias = torch.zeros(B, S, dtype=A.dtype, device=A.device)
    A_x = None
    for node in reversed(g.nodes[: g.position(target) + 1]):
        Ac = pending.pop(node.name, None)
        if Ac is None:
            continue
        if not state.dep[node.name]:
            val = state.fixed[node.name].unsqueeze(1)
            bias = bias + (Ac * val).flatten(2).sum(-1)
            continue
        if node.op == INPUT:
            A_x = Ac
            continue
        op = registry.get(node.op, node.where)
        if op.linear:
            in_shapes = [g[s].shape for s in node.inputs]
            flat = Ac.reshape(Ac.shape[0] * S, *node.shape)
            parts = op.vjp(node.params, flat, in_shapes)
            parts = [p.reshape(Ac.shape[0], S, *p.shape[1:]) for p in parts]
            off = op.offset(node.params)
            if off is not None:
                bias = bias + (Ac * off).flatten(2).sum(-1)
        else:
            rel = relaxation(state, node.name, None if opt is None else opt.get(node.name))
            parts, b = op.crown_backward(node.params, Ac, rel)
            bias = bias + b
        for src, part in zip(node.inputs, parts):
            if part is None:
                continue
            prev = pending.get(src)
            pending[src] = part if prev is None else prev + part
    if A_x is None:
        A_x = torch.zeros(B, S, *state.domain.in_shape, dtype=A.dtype, device=A.device)
    return A_x, bias


def crown_upper(state: BoundState, target: str, A: Tensor,
                opt: Mapping[str, Mapping[str, Tensor]] | None = None) -> Tensor:
    """sup over the domain of <A[b, s], v_target(x)>, as a sound upper bound [B, S]."""
    A_x, bias = backsubstitute(state, target, A, opt)
    if A_x.shape[0] != state.domain.batch_size:
        A_x = A_x.expand(state.domain.batch_size, *A_x.shape[1:])
        bias = bias.expand(state.domain.batch_size, -1)
    return state.domain.concretize_upper(A_x, bias)


def crown_node_bounds(state: BoundState, name: str) -> Interval:
    """CROWN lower and upper bounds of every element of node ``name`` ([B, *shape])."""
    node = state.graph[name]
    m = node.numel
    B = state.domain.batch_size
    ref = state.domain.interval().lower
    chunk = max(1, MAX_ELEMENTS_PER_CHUNK // max(1, B * _largest_numel(state)))
    ups = []
    for start in range(0, 2 * m, chunk):
        rows = slice(start, min(2 * m, start + chunk))
        A = identity_spec(node.shape, rows, ref.dtype, ref.device).expand(B, -1, *node.shape)
        ups.append(crown_upper(state, name, A))
    up = torch.cat(ups, 1)
    return Interval(-up[:, m:].reshape(B, *node.shape), up[:, :m].reshape(B, *node.shape))


def crown_intermediate(state: BoundState, skip: set[str] | None = None) -> None:
    """Tighten, in topological order, the bounds of every node that a nonlinear op reads."""
    for name in nodes_needing_bounds(state.graph):
        if (skip and name in skip) or name == state.graph.input:
            continue
        if _is_first_affine_of_box(state, name):
            continue  # IBP is already exact there
        state.set_bounds(name, crown_node_bounds(state, name))


def _largest_numel(state: BoundState) -> int:
    return max(n.numel for n in state.graph.nodes)


def _is_first_affine_of_box(state: BoundState, name: str) -> bool:
    """An affine function of the input over a box: IBP gives the exact range."""
    from lipbound.bounds.domains import Box, LpBall

    dom = state.domain
    boxy = isinstance(dom, Box) or (isinstance(dom, LpBall) and dom.p == float("inf"))
    node = state.graph[name]
    if not boxy or node.op in (INPUT,) or len(node.inputs) != 1:
        return False
    op = registry.get(node.op, node.where)
    return op.linear and node.inputs[0] == state.graph.input


__all__ = ["Relaxation", "backsubstitute", "crown_intermediate", "crown_node_bounds",
           "crown_upper", "relaxation"]
