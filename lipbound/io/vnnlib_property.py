"""The property model of a VNN-LIB file: input boxes with disjunctions of output conditions.

:class:`VnnlibProperty` holds :class:`InputRegion` s, each a box with a disjunction of
:class:`Conjunction` s ``C y <= d`` (the semantics are in :mod:`lipbound.io.vnnlib`). The helpers
turn a region into bound specs and verdicts: :func:`stack_conjunctions` (one spec matrix),
:func:`is_refuted` (certified lower bounds -> safe), :func:`is_counterexample` (a concrete
output), and :func:`center_radius_linf` reads a box as a clipped l_inf ball.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from lipbound.errors import InputError, ShapeError

__all__ = [
    "Conjunction",
    "InputRegion",
    "VnnlibProperty",
    "center_radius_linf",
    "is_counterexample",
    "is_refuted",
    "stack_conjunctions",
]


class Conjunction(NamedTuple):
    """``C y <= d`` (all rows): one disjunct of a region's unsafe output set."""

    C: torch.Tensor  # [m, K] float64
    d: torch.Tensor  # [m] float64


@dataclass(frozen=True, eq=False)
class InputRegion:
    """An input box and the output conditions that make a point of it a counterexample."""

    lower: torch.Tensor  # [n] float64
    upper: torch.Tensor  # [n] float64
    disjuncts: tuple[Conjunction, ...]

    @property
    def num_inputs(self) -> int:
        return int(self.lower.numel())

    def contains(self, x: torch.Tensor, tol: float = 0.0) -> bool:
        """Whether the (flattened) input ``x`` lies in the box, up to ``tol``."""
        x = _flat(x, self.num_inputs, "x").to(torch.float64)
        return bool(((x >= self.lower - tol) & (x <= self.upper + tol)).all())

    def spec(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stacked rows ``(C [M, K], d [M], owner [M])``, see :func:`stack_conjunctions`."""
        return stack_conjunctions(self.disjuncts)

    def is_refuted(self, lower_bounds: torch.Tensor) -> bool:
        """:func:`is_refuted` for this region's disjuncts (rows in :meth:`spec` order)."""
        return is_refuted(lower_bounds, self.disjuncts)

    def is_counterexample(self, x: torch.Tensor, y: torch.Tensor, tol: float = 0.0) -> bool:
        """Whether ``x`` lies in the box and ``y`` satisfies some disjunct."""
        return self.contains(x, tol) and is_counterexample(y, self.disjuncts, tol)


@dataclass(frozen=True, eq=False)
class VnnlibProperty:
    """A parsed VNN-LIB file: violated iff some region has a counterexample.

    ``comments`` holds the text of the file's ``;`` comment lines in order (the first one often
    names the label or the radius).
    """

    regions: tuple[InputRegion, ...]
    num_inputs: int
    num_outputs: int
    source: str
    comments: tuple[str, ...] = ()

    def is_counterexample(self, x: torch.Tensor, y: torch.Tensor, tol: float = 0.0) -> bool:
        """Whether the input ``x`` with output ``y`` (= f(x)) violates the property."""
        return any(r.is_counterexample(x, y, tol) for r in self.regions)


def _flat(v: torch.Tensor, n: int, what: str) -> torch.Tensor:
    v = torch.as_tensor(v)
    if v.numel() != n:
        raise ShapeError(f"{what} has {v.numel()} elements, expected {n}")
    return v.reshape(n)


def stack_conjunctions(
    disjuncts: Sequence[Conjunction],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack the rows of all disjuncts: ``C [M, K]``, ``d [M]`` and ``owner [M]`` (disjunct index).

    Bound ``C f`` from below over the box, e.g. ``lo, _ = lipbound.output_bounds(model, x0, eps,
    spec=C)``, and pass ``lo`` to :func:`is_refuted`.
    """
    if not disjuncts:
        raise InputError("no disjuncts to stack")
    C = torch.cat([c.C for c in disjuncts])
    d = torch.cat([c.d for c in disjuncts])
    owner = torch.cat(
        [torch.full((c.C.shape[0],), i, dtype=torch.long) for i, c in enumerate(disjuncts)]
    )
    return C, d, owner


def is_refuted(lower_bounds: torch.Tensor, disjuncts: Sequence[Conjunction]) -> bool:
    """Whether certified lower bounds of the stacked rows prove that no disjunct can hold.

    ``lower_bounds[j]`` must be a sound lower bound of ``min over the box of C_j f(x)`` for the
    rows in :func:`stack_conjunctions` order. A disjunct is refuted when one of its rows has
    ``lower_bounds[j] > d[j]``; the region is safe when every disjunct is refuted. A disjunct
    without rows (any output is unsafe) is never refuted.
    """
    lower_bounds = torch.as_tensor(lower_bounds).reshape(-1)
    start = 0
    for c in disjuncts:
        m = c.C.shape[0]
        rows = lower_bounds[start : start + m]
        if rows.numel() != m:
            raise ShapeError(
                f"{lower_bounds.numel()} lower bounds for "
                f"{sum(c.C.shape[0] for c in disjuncts)} rows"
            )
        if not bool((rows.to(torch.float64) > c.d).any()):
            return False
        start += m
    if start != lower_bounds.numel():
        raise ShapeError(f"{lower_bounds.numel()} lower bounds for {start} rows")
    return True


def is_counterexample(y: torch.Tensor, disjuncts: Sequence[Conjunction], tol: float = 0.0) -> bool:
    """Whether the output ``y`` ([K] or [1, K]) satisfies ``C y <= d + tol`` for some disjunct."""
    if not disjuncts:
        return False
    k = disjuncts[0].C.shape[1]
    y = _flat(y, k, "y").to(torch.float64)
    return any(bool((c.C @ y <= c.d + tol).all()) for c in disjuncts)


def center_radius_linf(
    lower: torch.Tensor,
    upper: torch.Tensor,
    data_range: tuple[float, float] | None = (0.0, 1.0),
    atol: float = 1e-6,
) -> tuple[torch.Tensor, float]:
    """Centre ``x0`` and radius ``eps`` of a box that is an l_inf ball clipped to ``data_range``.

    ``eps`` is half the widest width among coordinates touching neither end of the data range
    (all coordinates when ``data_range`` is None, or when every coordinate touches one);
    ``x0 = hi - eps`` where the upper end is below the data maximum, else ``lo + eps`` (clipped
    to the data range). Taking the widest width makes the clipped ball contain the box even when
    the file's bounds carry float32 rounding. Returns ``(x0, eps)`` with ``x0`` float64 of
    ``lower``'s shape, after checking that ``clip([x0 - eps, x0 + eps], data_range)`` reproduces
    the box to ``atol``; raises :class:`~lipbound.errors.InputError` if it does not (e.g. a box
    whose radius differs per channel; call it per channel then).
    """
    lo = torch.as_tensor(lower, dtype=torch.float64)
    hi = torch.as_tensor(upper, dtype=torch.float64)
    if lo.shape != hi.shape or lo.numel() == 0:
        raise InputError(f"lower {list(lo.shape)} and upper {list(hi.shape)} must match")
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()) or bool((lo > hi).any()):
        raise InputError("the box must be finite with lower <= upper")
    if data_range is None:
        dmin, dmax = -math.inf, math.inf
    else:
        dmin, dmax = float(data_range[0]), float(data_range[1])
        if not dmin < dmax:
            raise InputError(f"data_range {data_range} must be (min, max) with min < max")
        if bool((lo < dmin - atol).any() or (hi > dmax + atol).any()):
            raise InputError(f"the box leaves the data range {data_range}")
    width = hi - lo
    free = (lo > dmin + atol) & (hi < dmax - atol)
    eps = float(width[free].max() / 2) if bool(free.any()) else float(width.max())
    x0 = torch.where(hi < dmax - atol, hi - eps, lo + eps).clamp(dmin, dmax)
    rlo = (x0 - eps).clamp(dmin, dmax)
    rhi = (x0 + eps).clamp(dmin, dmax)
    err = max(float((rlo - lo).abs().max()), float((rhi - hi).abs().max()))
    if err > atol:
        raise InputError(
            f"the box is not an l_inf ball of one radius clipped to {data_range}: with radius "
            f"{eps:.6g} it is off by up to {err:.3g} (atol {atol:g})"
        )
    return x0, eps
