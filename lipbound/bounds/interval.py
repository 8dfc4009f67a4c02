"""Immutable value types for bounds."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Interval:
    """Elementwise bounds ``lower <= v <= upper`` on a batched tensor ``v`` ([B or 1, *shape])."""

    lower: Tensor
    upper: Tensor

    @staticmethod
    def point(value: Tensor) -> Interval:
        return Interval(value, value)

    @property
    def center(self) -> Tensor:
        return (self.lower + self.upper) / 2

    @property
    def radius(self) -> Tensor:
        return (self.upper - self.lower) / 2

    @property
    def width(self) -> Tensor:
        return self.upper - self.lower

    def intersect(self, other: Interval) -> Interval:
        """Both intervals are sound, so their intersection is too. A NaN end (an interval
        computation that lost all information, e.g. inf - inf) counts as unbounded: the
        other interval's end is kept (NaN only where both are NaN)."""
        return Interval(torch.fmax(self.lower, other.lower),
                        torch.fmin(self.upper, other.upper))

    def abs_max(self) -> Tensor:
        """max(|lower|, |upper|), the bound on |v|."""
        return torch.maximum(self.lower.abs(), self.upper.abs())

    def contains(self, v: Tensor, tol: float = 0.0) -> Tensor:
        """Whether every entry of v lies inside (with an absolute/relative tolerance)."""
        slack = tol * (1.0 + v.abs())
        return ((v >= self.lower - slack) & (v <= self.upper + slack)).all()


@dataclass(frozen=True)
class LinearFunction:
    """Linear functions of the input, ``y_s(x) = <A[b, s], x[b]> + bias[b, s]``.

    ``A``: [B, S, *in], ``bias``: [B, S].
    """

    A: Tensor
    bias: Tensor


def sum_elements(t: Tensor) -> Tensor:
    """Sum of ``t`` [B, S, *shape] over its per-sample element dims, [B, S] (nothing to sum
    for a per-sample scalar, shape ``()``: ``x[:, 0]``, ``x.sum(1)``)."""
    return t.reshape(*t.shape[:2], -1).sum(-1)
