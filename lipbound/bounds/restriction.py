"""What a bound computation may assume about its sets beyond the domain: :class:`Restriction`.

Branch-and-bound bounds sub-domains of a root set. A sub-domain is the root domain restricted
by sign splits of ReLU-like inputs, and everything proved on a larger set (the root's forward
bounds, a parent's gradient bounds) stays valid on it. :class:`Restriction` carries both kinds
of knowledge into one bound call (:func:`lipbound.propagate.driver.prepare_state`,
:func:`lipbound.jacobian.bound.jacobian_state`) instead of a parameter per kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval


@dataclass(frozen=True, eq=False)
class Restriction:
    """An immutable restriction of the D sets one bound call bounds (the domain's batch).

    Fields (all optional; the empty restriction :data:`UNRESTRICTED` changes nothing):

    ``splits``: forward node name -> sign constraints [D, *shape] in {-1, 0, 1} on that node
        (a ReLU-like input). Set d contains only the points where every element with +1 is
        >= 0 and every element with -1 is <= 0 (0: unconstrained). Bounds computed under it
        hold on that closed sub-domain only: the node's bounds are clamped to the signs, the
        split constraints enter CROWN with multipliers beta >= 0, and in a Jacobian graph the
        switch of a split neuron takes the split's derivative (:meth:`strict_switch`; the
        sibling domain covers the other sign).
    ``forward``: forward node name -> sound bounds [1 or D, *shape] of that node on every set
        (e.g. a branch-and-bound root's optimised bounds, valid on each sub-domain). They are
        intersected in after IBP, before CROWN forms any relaxation from them.
    ``boxes``: forward node name -> box constraints [D, *shape] on that node from splits at
        the kinks of the ops reading it (x <= t or x >= t; infinite where unconstrained).
        Set d contains only the points inside its boxes; the node's bounds are clamped to
        them (like ``forward``), their ends enter CROWN with multipliers beta >= 0, and in a
        Jacobian graph the derivative nodes reading the
        node take the one-sided derivatives at a box's finite ends (:meth:`open_box`; the
        sibling domain covers the other side, as for ``splits``).
    ``gradient``: sound bounds of the input gradient node of the Jacobian graph on the sets
        ([D * S, *in], row d * S + s: set d, spec row s; e.g. a parent's element bounds),
        intersected in before the backward graph's relaxations are formed; None: none known.

    Only soundness is promised by whoever builds it: bounds that are not valid on the sets
    make every bound computed under the restriction unsound. The mappings are read-only views
    of copies; the tensors are not copied and must not be modified.
    """

    splits: Mapping[str, Tensor] = field(default_factory=dict)
    forward: Mapping[str, Interval] = field(default_factory=dict)
    gradient: Interval | None = None
    boxes: Mapping[str, Interval] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "splits", MappingProxyType(dict(self.splits)))
        object.__setattr__(self, "forward", MappingProxyType(dict(self.forward)))
        object.__setattr__(self, "boxes", MappingProxyType(dict(self.boxes)))

    def open_box(self, name: str, iv: Interval, rows: Tensor | None = None) -> Interval:
        """Bounds ``iv`` of node ``name`` (already clamped to its box) with every finite box
        end that ``iv`` reaches moved one float inward, for the derivative nodes reading it:
        restricted to one side of a kink, they take that side's derivative even at the kink
        (the sibling domain takes the other; the gradient is multilinear in each element's
        derivative, so the ends of the Clarke segment at the kink carry every supremum).
        ``rows``: which set each row of ``iv`` belongs to (a Jacobian graph's D * S rows)."""
        box = self.boxes.get(name)
        if box is None:
            return iv
        if rows is not None and box.lower.shape[0] > 1:
            box = Interval(box.lower[rows], box.upper[rows])
        lo, up = iv.lower, iv.upper
        at_lo = torch.isfinite(box.lower) & (lo <= box.lower) & (up > box.lower)
        at_up = torch.isfinite(box.upper) & (up >= box.upper) & (lo < box.upper)
        inf = torch.full_like(lo, torch.inf)
        lo2 = torch.where(at_lo, torch.nextafter(box.lower.expand_as(lo), inf), lo)
        up2 = torch.where(at_up, torch.nextafter(box.upper.expand_as(up), -inf), up)
        return Interval(torch.minimum(lo2, up2), up2)

    def strict_switch(self, name: str, iv: Interval) -> Interval:
        """Forward bounds ``iv`` of node ``name`` for the Jacobian graph's switches: strictly
        positive (negative) where split +1 (-1), so a split neuron's switch is the split's
        derivative even where the closed sub-domain reaches 0."""
        sp = self.splits.get(name)
        if sp is None:
            return iv
        tiny = torch.finfo(iv.lower.dtype).tiny
        return Interval(torch.where(sp > 0, iv.lower.clamp(min=tiny), iv.lower),
                        torch.where(sp < 0, iv.upper.clamp(max=-tiny), iv.upper))


#: The empty restriction: the sets are the domain's, nothing more is known.
UNRESTRICTED = Restriction()
