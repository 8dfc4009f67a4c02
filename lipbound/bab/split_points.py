"""The split variables of a sign / kink search and what generic code reads off them.

A :class:`~lipbound.graph.shapes.SplitPoint` is a family of split variables, one per element
of a node, at one kink of the ops reading it (the ops declare their kinks). A domain gives
each variable a sign: +1 (node >= point), -1 (node <= point) or 0 (unsplit). Sign splits of
ReLU-like inputs at 0 go to :attr:`~lipbound.bounds.restriction.Restriction.splits` (beta
multipliers, strict switches); every other kink split becomes a box
(:func:`kink_boxes`, :attr:`~lipbound.bounds.restriction.Restriction.boxes`) that clamps the
node's bounds, enters CROWN with multipliers (:func:`~lipbound.propagate.crown.box_key`) and
makes the derivative nodes reading it one-sided.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.graph.ir import Graph
from lipbound.graph.shapes import SplitPoint, split_points
from lipbound.ops import registry


def undecided_kinks(graph: Graph, bounds: Mapping[str, Interval]) -> int:
    """How many split variables of ``graph`` have their node's ``bounds`` strictly across
    their kink (elements a search could still split), summed over the split points."""
    count = 0
    for sp in split_points(graph):
        iv = bounds[sp.node]
        count += int(((iv.lower < sp.point) & (iv.upper > sp.point)).sum())
    return count


def kink_boxes(graph: Graph, points: list[SplitPoint], signs: list[Tensor],
               dtype: torch.dtype) -> dict[str, Interval]:
    """The kink splits (``sign`` False) of D domains as boxes [D, *shape] per node: +1 at
    point t means node >= t, -1 means node <= t; several kinks of one node intersect;
    infinite where unconstrained."""
    D = signs[0].shape[0]
    out: dict[str, Interval] = {}
    for sp, s in zip(points, signs):
        if sp.sign:
            continue
        s = s.reshape(D, *graph[sp.node].shape)
        inf = torch.full(s.shape, torch.inf, dtype=dtype, device=s.device)
        t = torch.full_like(inf, sp.point)
        lo, up = torch.where(s > 0, t, -inf), torch.where(s < 0, t, inf)
        if sp.node in out:
            lo = torch.maximum(out[sp.node].lower, lo)
            up = torch.minimum(out[sp.node].upper, up)
        out[sp.node] = Interval(lo, up)
    return out


def cotangent_magnitude(state, jg, names: list[str], D: int) -> list[Tensor]:
    """Per split node of ``names``, the largest |cotangent| its switch reads over the spec
    rows of each domain, [D, m]: a bound on how much a unit change of the neuron's output
    moves the rows (``state``: bounds of the joint graph ``jg`` with batch D * S)."""
    switch_in = {}  # split node -> the cotangent of (the first) op with kinks reading it
    for n in reversed(state.graph.nodes):
        if n.name in jg.cotangents and len(n.inputs) == 1 and \
                registry.get(n.op, n.where).kinks(n.params):
            switch_in[n.inputs[0]] = jg.cotangents[n.name]
    out = []
    for n in names:
        iv = state.interval(switch_in[n])
        m = state.graph[switch_in[n]].numel
        mag = torch.maximum(iv.lower.abs(), iv.upper.abs()).reshape(-1, m)
        mag = mag.reshape(D, -1, m) if mag.shape[0] > 1 else mag[None]
        out.append(mag.amax(1).expand(D, -1))
    return out
