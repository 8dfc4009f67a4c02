"""Intermediate bounds: CROWN (or alpha-CROWN) bounds of every node a nonlinear op reads.

``crown_intermediate`` tightens, in topological order, the bounds of every node that a
relaxation reads and intersects them with what is known (IBP); ``crown_node_bounds`` bounds one
node's elements by :func:`lipbound.propagate.crown.crown_upper` on identity rows, or by
:func:`lipbound.propagate.alpha.alpha_crown_upper` when optimised.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from lipbound.bounds.domains import Box, LpBall
from lipbound.bounds.interval import Interval
from lipbound.errors import ProblemTooLargeError, is_out_of_memory
from lipbound.graph.ir import INPUT
from lipbound.graph.shapes import nodes_needing_bounds
from lipbound.ops import registry
from lipbound.propagate import windows
from lipbound.propagate.alpha import alpha_crown_upper
from lipbound.propagate.crown import crown_upper
from lipbound.propagate.state import BoundState

#: memory target of one chunk of CROWN rows in :func:`crown_node_bounds`, in tensor elements:
#: the coefficients a chunk holds at once, batch x rows x the largest node it passes (or, when
#: optimising, x the sum of those nodes, whose coefficients autograd keeps for the gradient);
#: 2**25 float64 elements are 256 MiB. A chunk that runs out of memory is bounded in halves.
MAX_ELEMENTS_PER_CHUNK = 2**25
#: hard cap of a single row (2 GiB in float64): a node whose one row needs more, or one row
#: that runs out of memory, raises ProblemTooLargeError instead of exhausting the memory
MAX_ELEMENTS_PER_ROW = 2**28


def node_mask(state: BoundState, name: str) -> Tensor | None:
    """[B or 1, m] bool: per set of the batch, the flat elements of ``name`` whose bounds
    can change a relaxation that reads them, or None for all elements."""
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
            m = m.reshape(-1, state.graph[name].numel)
            mask = m if mask is None else mask | m
    return mask


def node_rows(state: BoundState, name: str) -> Tensor | None:
    """Flat indices of the elements of ``name`` whose bounds can change a relaxation that
    reads them (union over the batch), or None for all elements."""
    return _union_rows(node_mask(state, name))


def _union_rows(mask: Tensor | None) -> Tensor | None:
    """Flat indices of the elements some set of ``mask`` [B or 1, m] holds (None: all)."""
    return None if mask is None else mask.any(0).nonzero().flatten()


def crown_node_bounds(state: BoundState, name: str, rows: Tensor | None = None,
                      iterations: int = 0, sides: Tensor | None = None) -> Interval:
    """CROWN (alpha-CROWN with ``iterations`` > 0) bounds of node ``name`` ([B, *shape]).

    Only the flat elements ``rows`` (default: all) are bounded, and of those only the upper
    (lower) bounds where ``sides[:R]`` (``sides[R:]``) is True (default: both); the others
    get -inf / inf, which :meth:`BoundState.set_bounds` intersects away.
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
    chunk = _chunk_rows(state, name, iterations)
    up = torch.full((B, 2 * R), torch.inf, dtype=ref.dtype, device=ref.device)
    for part, A in _row_groups(node.shape, idx, chunk, ref, B, sides):
        up[:, part] = _upper_in_halves(state, name, A, iterations)
    upper[:, idx] = up[:, :R]
    lower[:, idx] = -up[:, R:]
    return Interval(lower.reshape(B, *node.shape), upper.reshape(B, *node.shape))


#: spatial tile (positions per side) whose rows share a window in :func:`crown_node_bounds`
#: (0: dense rows)
WINDOW_TILE = 4


def _row_groups(shape: tuple[int, ...], idx: Tensor, chunk: int, ref: Tensor, B: int,
                sides: Tensor | None = None):
    """(positions in [0, 2R), coefficients [B, n, *shape]) of the rows [I; -I] at the
    elements ``idx`` (only the positions where ``sides`` is True): windows of spatial tiles
    for [C, H, W] nodes, else dense chunks."""
    R = idx.numel()
    if WINDOW_TILE and len(shape) == 3 and shape[1] * shape[2] > 1:
        for part, A in windows.identity_windows(shape, idx, WINDOW_TILE, chunk, ref.dtype,
                                                ref.device, B):
            if sides is not None:
                keep = sides.to(part.device)[part].nonzero().flatten()
                if keep.numel() == 0:
                    continue
                part, A = part[keep], windows.take_rows(A, keep)
            yield part, A
        return
    m = 1
    for s in shape:
        m *= s
    positions = torch.arange(2 * R, device=ref.device)
    if sides is not None:
        positions = positions[sides.to(ref.device)]
    for start in range(0, positions.numel(), chunk):
        part = positions[start:start + chunk]
        A = torch.zeros(len(part), m, dtype=ref.dtype, device=ref.device)
        sign = torch.where(part < R, 1.0, -1.0).to(ref.dtype)
        A[torch.arange(len(part), device=ref.device), idx[part % R]] = sign
        yield part, A.reshape(1, len(part), *shape).expand(B, -1, *shape)


def _chunk_rows(state: BoundState, name: str, iterations: int) -> int:
    """Rows per chunk under ``MAX_ELEMENTS_PER_CHUNK`` (at least one; ProblemTooLargeError
    when one row needs more than ``MAX_ELEMENTS_PER_ROW``)."""
    g = state.graph
    sizes = [n.numel for n in g.nodes[: g.position(name) + 1] if state.dep[n.name]]
    per_row = state.domain.batch_size * (sum(sizes) if iterations > 0 else max(sizes))
    if per_row > MAX_ELEMENTS_PER_ROW:
        raise ProblemTooLargeError(
            f"one CROWN row of node {name!r} needs {per_row} coefficients (batch "
            f"{state.domain.batch_size}), above the cap of {MAX_ELEMENTS_PER_ROW} "
            "(lipbound.propagate.intermediate.MAX_ELEMENTS_PER_ROW); use fewer specification rows, "
            "a smaller input or raise the cap")
    return max(1, MAX_ELEMENTS_PER_CHUNK // per_row)


def _upper_in_halves(state: BoundState, name: str, A, iterations: int) -> Tensor:
    """:func:`_upper`, in halves of the rows when it runs out of memory."""
    try:
        return _upper(state, name, A, iterations)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        if A.shape[1] <= 1:
            raise ProblemTooLargeError(
                f"one CROWN row of node {name!r} does not fit in memory; use fewer "
                "specification rows, a smaller input or a device with more memory") from err
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    halves = windows.split_rows(A, A.shape[1] // 2)
    return torch.cat([_upper_in_halves(state, name, h, iterations) for h in halves], 1)


def _upper(state: BoundState, name: str, A: Tensor, iterations: int) -> Tensor:
    if iterations > 0:
        return alpha_crown_upper(state, name, A, iterations).detach()
    with torch.no_grad():
        return crown_upper(state, name, A)


def crown_intermediate(state: BoundState, skip: set[str] | None = None,
                       iterations: int = 0, witnesses: Mapping[str, Tensor] | None = None,
                       per_set: bool = False) -> None:
    """Tighten, in topological order, the bounds of every node that a nonlinear op reads.

    Every node's interval is first intersected with IBP of its inputs' current (tightened)
    intervals, so that nodes CROWN skips or never bounds do not keep the looser intervals of
    the initial IBP pass.

    Skips nodes whose interval is already exact (the input, affine images of a box, outputs of
    monotone-piece elementwise functions, whose IBP range is exact for their input interval)
    and, per node, elements that cannot change any relaxation (e.g. stable ReLU inputs);
    nodes with split elements are bounded even then (their own splits constrain the input).
    With ``iterations`` > 0 the bounds are optimised (alpha-CROWN per element, with split
    multipliers beta under branch-and-bound splits), after a CROWN pass, only for the
    elements whose CROWN bounds can still change a relaxation (each element's optimisation
    is independent of the others', so those get the same bounds as when optimising all).
    ``witnesses`` maps nodes whose bounds matter only through their sign status
    (:func:`~lipbound.graph.shapes.sign_only_nodes`) to their values at points of the
    domain, [N, B, *shape]: such a node's upper (lower) bounds are optimised only where no
    witness is >= 0 (<= 0), since elsewhere no bound can become strictly negative
    (positive); the others keep their CROWN bounds, so nothing sign-decidable is lost.
    ``per_set`` (CROWN only): each set of the batch bounds only the elements it needs
    (:func:`crown_set_bounds`) instead of the union over the batch. Every bound is the same
    CROWN bound of its element; elements a set does not need keep their IBP bounds, which
    can loosen the IBP of the nodes after them. Forward graphs: it loosened ACAS Xu sub-box
    bounds (the IBP of unstable neurons reads the stable ones), so only the Jacobian
    graph's backward nodes use it (:func:`~lipbound.jacobian.bound.jacobian_state`: the
    same norm bounds as the union there, to 4e-12 relative, on 640 ACAS Xu sub-boxes).
    """
    needing = set(nodes_needing_bounds(state.graph))
    for node in state.graph.nodes:
        name = node.name
        if name == state.graph.input or not state.dep[name]:
            continue
        # IBP again from the inputs' tightened bounds (the IBP pass saw only IBP inputs): an
        # exact-interval node (e.g. rsqrt of a LayerNorm variance) is skipped below and
        # would otherwise keep the exploded IBP-of-IBP interval
        op = registry.get(node.op, node.where)
        state.set_bounds(name, op.ibp(node.params, *[state.interval(s) for s in node.inputs]))
        if name not in needing or (skip and name in skip):
            continue
        split_here = name in state.splits and bool((state.splits[name] != 0).any())
        exact = _is_first_affine_of_box(state, name) or _has_exact_interval(state, name)
        if exact and not split_here:  # splits of its own elements can tighten it (beta)
            continue
        mask = node_mask(state, name)
        rows = _union_rows(mask)
        if iterations == 0 or rows is not None:  # optimise only what CROWN leaves undecided
            state.set_bounds(name, _crown_needed(state, name, mask if per_set and
                                                 iterations == 0 else None, rows))
            if iterations == 0:
                continue
            rows = node_rows(state, name)
        sides = None
        if iterations > 0 and witnesses is not None and name in witnesses:
            sides = _decidable_sides(state, name, rows, witnesses[name])
        state.set_bounds(name, crown_node_bounds(state, name, rows, iterations, sides))


#: :func:`crown_set_bounds` replaces the union of the needed rows over the batch when the
#: most rows one set needs is at most this share of the union (its rows are per set, so its
#: first linear step cannot be shared by the batch)
PER_SET_MAX_SHARE = 0.75


def _crown_needed(state: BoundState, name: str, mask: Tensor | None, rows: Tensor | None
                  ) -> Interval:
    """CROWN bounds of the needed elements of ``name`` (``mask`` [B or 1, m] per set, ``rows``
    their union; None: the union): per set (:func:`crown_set_bounds`) when that bounds far
    fewer rows than the union, else the union's rows on every set."""
    shape = state.graph[name].shape
    windowed = WINDOW_TILE and len(shape) == 3 and shape[1] * shape[2] > 1
    if (mask is not None and rows is not None and mask.shape[0] > 1 and not windowed
            and int(mask.sum(1).max()) <= PER_SET_MAX_SHARE * rows.numel()):
        return crown_set_bounds(state, name, mask)
    return crown_node_bounds(state, name, rows, 0)


def crown_set_bounds(state: BoundState, name: str, mask: Tensor) -> Interval:
    """CROWN bounds of node ``name`` ([B, *shape], flat, not windowed) at the elements
    ``mask`` [B, m] of each set of the batch: row i of set b bounds its i-th masked element
    (then, up to the most any set has, unmasked ones), so a batch whose sets need different
    elements bounds max_b |mask[b]| rows per set instead of the union over the batch. Every
    value is a CROWN bound of its element on its set (as :func:`crown_node_bounds` computes
    it); elements no row reaches get -inf / inf, which :meth:`BoundState.set_bounds`
    intersects away."""
    node = state.graph[name]
    m = node.numel
    B = state.domain.batch_size
    ref = state.domain.interval().lower
    mask = mask.expand(B, m)
    lower = torch.full((B, m), -torch.inf, dtype=ref.dtype, device=ref.device)
    upper = torch.full((B, m), torch.inf, dtype=ref.dtype, device=ref.device)
    R = int(mask.sum(1).max())
    if R > 0:
        cols = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :R]  # [B, R]
        chunk = _chunk_rows(state, name, 0)
        parts = []
        for start in range(0, 2 * R, chunk):
            pos = torch.arange(start, min(start + chunk, 2 * R), device=ref.device)
            sign = torch.where(pos < R, 1.0, -1.0).to(ref.dtype)
            A = torch.zeros(B, len(pos), m, dtype=ref.dtype, device=ref.device)
            A.scatter_(2, cols[:, pos % R, None], sign[None, :, None].expand(B, -1, 1))
            parts.append(_upper_in_halves(state, name, A.reshape(B, len(pos), *node.shape), 0))
        up = torch.cat(parts, 1)
        upper.scatter_reduce_(1, cols, up[:, :R], "amin")
        lower.scatter_reduce_(1, cols, -up[:, R:], "amax")
    return Interval(lower.reshape(B, *node.shape), upper.reshape(B, *node.shape))


def _decidable_sides(state: BoundState, name: str, rows: Tensor | None, values: Tensor
                     ) -> Tensor:
    """[2R] bool: the upper bounds of ``rows`` that could still become < 0 for some set of
    the batch (no witness of that set >= 0), then the lower bounds that could become > 0."""
    m = state.graph[name].numel
    v = values.reshape(values.shape[0], values.shape[1], m)
    if rows is not None:
        v = v[:, :, rows.to(v.device)]
    up = (~(v >= 0).any(0)).any(0)  # some set of the batch has no witness >= 0
    lo = (~(v <= 0).any(0)).any(0)
    return torch.cat([up, lo])


def _has_exact_interval(state: BoundState, name: str) -> bool:
    node = state.graph[name]
    if node.op in (INPUT,) or len(node.inputs) != 1:
        return False
    return bool(getattr(registry.get(node.op, node.where), "exact_interval", False))


def _is_first_affine_of_box(state: BoundState, name: str) -> bool:
    """An affine function of the input over a box: IBP gives the exact range."""
    dom = state.domain
    boxy = isinstance(dom, Box) or (isinstance(dom, LpBall) and dom.p == float("inf"))
    node = state.graph[name]
    if not boxy or node.op in (INPUT,) or len(node.inputs) != 1:
        return False
    op = registry.get(node.op, node.where)
    return op.linear and node.inputs[0] == state.graph.input
