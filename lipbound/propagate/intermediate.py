"""Intermediate bounds: CROWN (or alpha-CROWN) bounds of every node a nonlinear op reads.

``crown_intermediate`` tightens, in topological order, the bounds of every node that a
relaxation reads and intersects them with what is known (IBP); ``crown_node_bounds`` bounds one
node's elements by :func:`lipbound.propagate.crown.crown_upper` on identity rows, or by
:func:`lipbound.propagate.alpha.alpha_crown_upper` when optimised.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lipbound.bounds.domains import Box, LpBall
from lipbound.bounds.interval import Interval
from lipbound.graph.ir import INPUT
from lipbound.graph.shapes import nodes_needing_bounds
from lipbound.ops import registry
from lipbound.propagate.alpha import alpha_crown_upper
from lipbound.propagate.crown import crown_upper
from lipbound.propagate.state import BoundState

# rows of a spec processed together when bounding intermediate nodes (memory cap)
MAX_ELEMENTS_PER_CHUNK = 2**25


def node_rows(state: BoundState, name: str) -> Tensor | None:
    """Flat indices of the elements of ``name`` whose bounds can change a relaxation that
    reads them (union over the batch), or None for all elements."""
    mask = None
    for user in state.users[name]:
        un = state.graph[user]
        op = registry.get(un.op, un.where)
        if op.linear:
            continue
        ivals = [state.interval(s) for s in un.inputs]
        for idx, src in enumerate(un.inputs):
            if src != name:
                continue
            m = op.tighten_mask(un.params, idx, *ivals)
            if m is None:
                return None
            m = m.reshape(-1, state.graph[name].numel).any(0)
            mask = m if mask is None else mask | m
    return None if mask is None else mask.nonzero().flatten()


def crown_node_bounds(state: BoundState, name: str, rows: Tensor | None = None,
                      iterations: int = 0) -> Interval:
    """CROWN (alpha-CROWN with ``iterations`` > 0) bounds of node ``name`` ([B, *shape]).

    Only the flat elements ``rows`` (default: all) are bounded; the others get (-inf, inf),
    which :meth:`BoundState.set_bounds` intersects away.
    """
    node = state.graph[name]
    m = node.numel
    B = state.domain.batch_size
    ref = state.domain.interval().lower
    idx = torch.arange(m, device=ref.device) if rows is None else rows.to(ref.device)
    R = idx.numel()
    lower = torch.full((B, m), -torch.inf, dtype=ref.dtype, device=ref.device)
    upper = torch.full((B, m), torch.inf, dtype=ref.dtype, device=ref.device)
    if R == 0:
        return Interval(lower.reshape(B, *node.shape), upper.reshape(B, *node.shape))
    chunk = max(1, MAX_ELEMENTS_PER_CHUNK // max(1, B * _largest_numel(state)))
    ups = []
    for start in range(0, 2 * R, chunk):
        part = torch.arange(start, min(2 * R, start + chunk), device=ref.device)
        A = torch.zeros(len(part), m, dtype=ref.dtype, device=ref.device)
        sign = torch.where(part < R, 1.0, -1.0).to(ref.dtype)
        A[torch.arange(len(part), device=ref.device), idx[part % R]] = sign
        A = A.reshape(1, len(part), *node.shape).expand(B, -1, *node.shape)
        ups.append(_upper(state, name, A, iterations))
    up = torch.cat(ups, 1)
    upper[:, idx] = up[:, :R]
    lower[:, idx] = -up[:, R:]
    return Interval(lower.reshape(B, *node.shape), upper.reshape(B, *node.shape))


def _upper(state: BoundState, name: str, A: Tensor, iterations: int) -> Tensor:
    if iterations > 0:
        return alpha_crown_upper(state, name, A, iterations).detach()
    with torch.no_grad():
        return crown_upper(state, name, A)


def crown_intermediate(state: BoundState, skip: set[str] | None = None,
                       iterations: int = 0) -> None:
    """Tighten, in topological order, the bounds of every node that a nonlinear op reads.

    Skips nodes whose interval is already exact (the input, affine images of a box, outputs of
    monotone-piece elementwise functions, whose IBP range is exact for their input interval)
    and, per node, elements that cannot change any relaxation (e.g. stable ReLU inputs);
    nodes with split elements are bounded even then (their own splits constrain the input).
    With ``iterations`` > 0 the bounds are optimised (alpha-CROWN per element, with split
    multipliers beta under branch-and-bound splits).
    """
    for name in nodes_needing_bounds(state.graph):
        if (skip and name in skip) or name == state.graph.input:
            continue
        split_here = name in state.splits and bool((state.splits[name] != 0).any())
        exact = _is_first_affine_of_box(state, name) or _has_exact_interval(state, name)
        if exact and not split_here:  # splits of its own elements can tighten it (beta)
            continue
        rows = node_rows(state, name)
        state.set_bounds(name, crown_node_bounds(state, name, rows, iterations))


def _has_exact_interval(state: BoundState, name: str) -> bool:
    node = state.graph[name]
    if node.op in (INPUT,) or len(node.inputs) != 1:
        return False
    return bool(getattr(registry.get(node.op, node.where), "exact_interval", False))


def _largest_numel(state: BoundState) -> int:
    return max(n.numel for n in state.graph.nodes)


def _is_first_affine_of_box(state: BoundState, name: str) -> bool:
    """An affine function of the input over a box: IBP gives the exact range."""
    dom = state.domain
    boxy = isinstance(dom, Box) or (isinstance(dom, LpBall) and dom.p == float("inf"))
    node = state.graph[name]
    if not boxy or node.op in (INPUT,) or len(node.inputs) != 1:
        return False
    op = registry.get(node.op, node.where)
    return op.linear and node.inputs[0] == state.graph.input
