"""The working state of one bound computation: a graph, a domain, fixed values and bounds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lipbound.bounds.domains import Domain
from lipbound.bounds.interval import Interval
from lipbound.graph.ir import CONST, INPUT, Graph
from lipbound.ops import registry


@dataclass
class BoundState:
    """Mutable scratch state of one propagation (not a public value type).

    ``fixed``: values [1 or B, *shape] of nodes that do not depend on the input;
    ``bounds``: sound intervals [1 or B, *shape] of input-dependent nodes computed so far;
    ``relax_cache``: default relaxations per nonlinear node (valid for the current bounds);
    ``splits``: branch-and-bound sign constraints per node ([B, *shape] in {-1, 0, 1}): the
    bounds of a node with split +1 (-1) are clamped to z >= 0 (z <= 0), which is sound on the
    sub-domain where the constraint holds.
    """

    graph: Graph
    domain: Domain
    fixed: dict[str, Tensor]
    bounds: dict[str, Interval] = field(default_factory=dict)
    relax_cache: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dep = self.graph.depends_on_input()
        self.users = self.graph.consumers()

    def interval(self, name: str) -> Interval:
        if not self.dep[name]:
            return Interval.point(self.fixed[name])
        return self.bounds[name]

    def set_bounds(self, name: str, iv: Interval) -> None:
        """Record a sound interval, intersected with what is already known."""
        old = self.bounds.get(name)
        iv = iv if old is None else old.intersect(iv)
        sp = self.splits.get(name)
        if sp is not None:
            iv = Interval(torch.where(sp > 0, iv.lower.clamp(min=0), iv.lower),
                          torch.where(sp < 0, iv.upper.clamp(max=0), iv.upper))
        self.bounds[name] = iv
        for user in self.users[name]:
            self.relax_cache.pop(user, None)


def evaluate_fixed(graph: Graph) -> dict[str, Tensor]:
    """Values of every node that does not depend on the perturbed input."""
    dep = graph.depends_on_input()
    vals: dict[str, Tensor] = {}
    for n in graph.nodes:
        if dep[n.name]:
            continue
        if n.op == CONST:
            vals[n.name] = n.params["value"]
        else:
            op = registry.get(n.op, n.where)
            vals[n.name] = op.apply(n.params, *[vals[s] for s in n.inputs])
    return vals


def nodes_needing_bounds(graph: Graph) -> list[str]:
    """Input-dependent nodes read by a nonlinear op, in topological order."""
    dep = graph.depends_on_input()
    need: set[str] = set()
    for n in graph.nodes:
        if n.op in (INPUT, CONST):
            continue
        if not registry.get(n.op, n.where).linear:
            need.update(s for s in n.inputs if dep[s])
    return [n.name for n in graph.nodes if n.name in need]


def ibp_pass(state: BoundState, only_missing: bool = False) -> None:
    """Interval bounds of every input-dependent node (intersected with known bounds);
    ``only_missing`` skips nodes that already have bounds."""
    for n in state.graph.nodes:
        if not state.dep[n.name] or (only_missing and n.name in state.bounds):
            continue
        if n.op == INPUT:
            iv = state.domain.interval()
        else:
            op = registry.get(n.op, n.where)
            iv = op.ibp(n.params, *[state.interval(s) for s in n.inputs])
        state.set_bounds(n.name, iv)


def identity_spec(shape: tuple[int, ...], rows: slice, dtype: torch.dtype,
                  device: torch.device) -> Tensor:
    """Rows ``rows`` of [I; -I] over a node of per-sample ``shape``: [1, R, *shape]."""
    m = 1
    for s in shape:
        m *= s
    idx = torch.arange(rows.start, rows.stop, device=device)
    eye = torch.zeros(len(idx), m, dtype=dtype, device=device)
    eye[torch.arange(len(idx), device=device), idx % m] = torch.where(idx < m, 1.0, -1.0).to(dtype)
    return eye.reshape(1, len(idx), *shape)
