"""The transpose of a linear op, as a linear op of its own (backward edges of Jacobian graphs).

For a forward linear op y = L(x_1..x_k) + b, ``transpose`` of input i maps a cotangent
g [*out] to L_i^T g [*in_i]. Its own transpose is L_i, so CROWN runs through it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from lipbound.autodiff import vjp
from lipbound.ops.base import LinearOp, Params
from lipbound.ops.facts import COEFFS, WindowMap
from lipbound.ops.registry import get, register


class Transpose(LinearOp):
    """params: inner (op kind), inner_params, index, in_shapes (of the inner op)."""

    kind = "transpose"

    def apply_linear(self, params: Params, g: Tensor, absolute: bool = False) -> Tensor:
        inner = get(params["inner"])
        p, idx, shapes = params["inner_params"], params["index"], params["in_shapes"]
        if not absolute:
            return inner.vjp(p, g, shapes)[idx]
        with torch.enable_grad():
            xs = [torch.zeros((g.shape[0], *s), dtype=g.dtype, device=g.device,
                              requires_grad=True) for s in shapes]
            y = inner.apply_linear(p, *xs, absolute=True)
            grad = vjp(y, xs[idx], g, create_graph=g.requires_grad)[0]
        return grad

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        """The inner op's forward fan-in (its vjp is that forward map)."""
        inner = get(params["inner"])
        n = inner.rounded_ops(params["inner_params"], params["in_shapes"])
        return max(n, 1) if n else super().backward_sum_terms(params, in_shapes, out_shape)

    def backward_facts(self, params: Params, centres: Sequence[Tensor],
                       radii: Sequence[Tensor], rel: Any = None
                       ) -> tuple[Tensor, Tensor, Tensor] | None:
        """Lemma 1 when the inner op's forward map has :attr:`exact_sums` (the vjp of a
        transpose is that forward map)."""
        if not get(params["inner"]).exact_sums:
            return None
        y = self.apply(params, *centres).unsqueeze(1)
        return y, y, self.apply_linear(params, *radii, absolute=True).unsqueeze(1)

    def window_map(self, params: Params, forward: bool = False) -> WindowMap | None:
        """The inner op's forward map (the vjp of a transpose); of a weighted sum, the
        coefficient of input ``index``."""
        if forward:
            return None
        m = get(params["inner"]).window_map(params["inner_params"], forward=True)
        if m is not None and m.form == COEFFS:
            return replace(m, coeffs=(m.coeffs[params["index"]],))
        return m

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        inner = get(params["inner"])
        return (inner.apply_linear_one(params["inner_params"], params["index"], A,
                                       params["in_shapes"]),)


register(Transpose())
