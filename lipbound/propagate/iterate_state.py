"""A lower-precision copy of a bound state for alpha-CROWN's iterates.

The Adam iterates of :mod:`lipbound.propagate.alpha` only choose relaxation parameters: the
bound that is returned is one pass in the state's own dtype with the chosen parameters, and
every projected parameter value is sound whatever the intervals (the projections read no
bounds). So the iterates may run on a copy of the state whose graph, domain, fixed values and
bounds are cast to float32, where convolutions, their autograd and the Adam arithmetic cost
about half as much as in float64. Nothing about soundness depends on this copy; only which
parameters are kept does.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.graph.ir import graph_to
from lipbound.propagate.state import BoundState
from lipbound.propagate.windows import Cols, Window, dot


def _cast(t, dtype: torch.dtype):
    return t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t


def _cast_interval(iv: Interval, dtype: torch.dtype) -> Interval:
    return Interval(iv.lower.to(dtype), iv.upper.to(dtype))


def cast_state(state: BoundState, dtype: torch.dtype) -> BoundState:
    """A copy of ``state`` with every floating-point tensor in ``dtype`` (the cast graph is
    cached on the state, so the chunks of one node share it)."""
    cache = state.coef_cache.setdefault("iterate_graph", {})
    graph = cache.get(dtype)
    if graph is None:
        graph = cache[dtype] = graph_to(state.graph, dtype)
    domain = replace(state.domain, **{f.name: _cast(getattr(state.domain, f.name), dtype)
                                      for f in fields(state.domain)})
    return BoundState(graph, domain, {k: _cast(v, dtype) for k, v in state.fixed.items()},
                      bounds={k: _cast_interval(v, dtype) for k, v in state.bounds.items()},
                      splits={k: _cast(v, dtype) for k, v in state.splits.items()},
                      boxes={k: _cast_interval(v, dtype) for k, v in state.boxes.items()},
                      coef_dtype=None)


def cast_coefficients(A, dtype: torch.dtype):
    """Coefficients (dense, :class:`Window` or :class:`Cols`) in ``dtype``."""
    if isinstance(A, (Window, Cols)):
        return replace(A, data=A.data.to(dtype))
    return A.to(dtype)


def target_widths(state: BoundState, target: str, A) -> Tensor:
    """[B or 1, S]: ``<|A|, u - l>`` over the target's current interval, the width of the
    interval bound of each row (the scale on which optimising its relaxations moves it)."""
    iv = state.interval(target)
    width = (iv.upper - iv.lower).unsqueeze(1)
    if isinstance(A, (Window, Cols)):
        return dot(replace(A, data=A.data.abs()), width)
    return dot(A.abs(), width)
