"""The working state of one bound computation: a graph, a domain, fixed values and bounds."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lipbound.bounds.domains import Domain
from lipbound.bounds.interval import Interval
from lipbound.graph.ir import Graph

_COEF_DTYPE: contextvars.ContextVar[torch.dtype | None] = contextvars.ContextVar(
    "lipbound_coef_dtype", default=None)


@contextlib.contextmanager
def coefficient_dtype(dtype: torch.dtype | None) -> Iterator[None]:
    """Bound states created inside run their CROWN coefficients in ``dtype`` (None: the
    graph's own dtype); :mod:`lipbound.propagate.mixed` accounts for the rounding."""
    token = _COEF_DTYPE.set(dtype)
    try:
        yield
    finally:
        _COEF_DTYPE.reset(token)


@dataclass
class BoundState:
    """Mutable scratch state of one propagation (not a public value type).

    ``fixed``: values [1 or B, *shape] of nodes that do not depend on the input;
    ``bounds``: sound intervals [1 or B, *shape] of input-dependent nodes computed so far;
    ``relax_cache``: default relaxations per nonlinear node (valid for the current bounds);
    ``splits``: branch-and-bound sign constraints per node ([B, *shape] in {-1, 0, 1}): the
    bounds of a node with split +1 (-1) are clamped to z >= 0 (z <= 0), which is sound on the
    sub-domain where the constraint holds.
    ``coef_dtype``: dtype of the CROWN coefficients (None: the graph's; set by
    :func:`coefficient_dtype`), ``coef_cache``: its cast graph and input magnitudes.
    """

    graph: Graph
    domain: Domain
    fixed: dict[str, Tensor]
    bounds: dict[str, Interval] = field(default_factory=dict)
    relax_cache: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, Tensor] = field(default_factory=dict)
    #: kink splits: per node, boxes [B, *shape] its values lie in on each set (CROWN adds
    #: their multipliers, :func:`~lipbound.propagate.crown.box_key`)
    boxes: dict[str, Interval] = field(default_factory=dict)
    coef_dtype: torch.dtype | None = field(default_factory=_COEF_DTYPE.get)
    coef_cache: dict[str, Any] = field(default_factory=dict)

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
