"""Bounds that set the big-M constants of the Lipschitz MILP, and how to combine them.

All bounds here hold over the *chain-rule set* of the network on the input set B:

    {(x, delta) : x in B, delta_i = act'(z_i(x)) with delta free in {k_i, 1} where z_i(x) = 0}.

- ``preact[i] = (l, u)``: l <= z_i(x) <= u (forward pre-activations of hidden layer i);
- ``backward[i] = (la, ua)``: bounds on the vector a that delta_i multiplies in the backward pass
  (the gradient of c . f with respect to the output of hidden layer i), for every delta;
- ``gradient = (la0, ua0)``: bounds on the input gradient W_1^T D_1 ... W_L^T c;
- ``norm_upper``: an upper bound on its dual norm (``inf`` if none is known).

The MILP ranges over exactly this set, so these bounds never cut off a feasible point; the
intersection of two sound bound sets is sound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lipbound.errors import InputError
from lipbound.exact.domain import InputBall, backward_bounds, interval_bounds, stability
from lipbound.exact.mlp import MLP

Pair = tuple[np.ndarray, np.ndarray]

# relative (plus tiny absolute) outward padding of bounds computed in floating point elsewhere
WIDEN_REL = 1e-9
WIDEN_ABS = 1e-12


@dataclass(frozen=True, eq=False)
class MilpBounds:
    """Sound bounds over the chain-rule set (see the module docstring); float64 arrays."""

    preact: tuple[Pair, ...]
    backward: tuple[Pair, ...]
    gradient: Pair
    norm_upper: float = math.inf
    source: str = "interval"

    def n_unstable(self) -> int:
        """Neurons with l <= 0 <= u (each needs a binary in the MILP)."""
        return int(sum(np.sum((l <= 0) & (u >= 0)) for l, u in self.preact))

    def stable_per_layer(self) -> list[int]:
        return [int(np.sum((l > 0) | (u < 0))) for l, u in self.preact]


def widen(lo: np.ndarray, hi: np.ndarray, rel: float = WIDEN_REL) -> Pair:
    """Pad bounds outward for the rounding of the computation that produced them (``rel``:
    1e-9 suits float64 propagation; lower precisions need more, e.g. 1e-5 for float32)."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    pad = rel * (1.0 + np.abs(lo) + np.abs(hi)) + WIDEN_ABS
    return lo - pad, hi + pad


def interval_milp_bounds(mlp: MLP, ball: InputBall, c: np.ndarray,
                         preact_bounds=None) -> MilpBounds:
    """Interval-arithmetic bounds of every MILP quantity (forward intersected with the optional
    sound ``preact_bounds``; backward with derivative intervals from the forward stability)."""
    pre = interval_bounds(mlp, ball, preact_bounds)
    back, grad = backward_bounds(mlp, stability(pre), c)
    return MilpBounds(tuple(pre), tuple(back), grad, math.inf,
                      "interval" if preact_bounds is None else "interval+given")


def _meet(a: Pair, b: Pair, what: str) -> Pair:
    lo, hi = np.maximum(a[0], b[0]), np.minimum(a[1], b[1])
    if np.any(lo > hi):
        raise InputError(f"{what}: two bound computations do not intersect, one is unsound")
    return lo, hi


def intersect_forward(mlp: MLP, ball: InputBall, c: np.ndarray, base: MilpBounds,
                      other: MilpBounds) -> MilpBounds:
    """Intersect the forward bounds, recompute the interval backward bounds from the tighter
    stability, and intersect those with ``other``'s backward bounds."""
    pre = tuple(_meet(a, b, f"pre-activation bounds of hidden layer {i}")
                for i, (a, b) in enumerate(zip(base.preact, other.preact)))
    back, grad = backward_bounds(mlp, stability(pre), c)
    back = tuple(_meet(a, b, f"backward bounds of hidden layer {i}")
                 for i, (a, b) in enumerate(zip(back, other.backward)))
    grad = _meet(grad, other.gradient, "input-gradient bounds")
    return MilpBounds(pre, back, grad, min(base.norm_upper, other.norm_upper),
                      f"{base.source}+{other.source}")
