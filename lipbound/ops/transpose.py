"""The transpose of a linear op, as a linear op of its own (backward edges of Jacobian graphs).

For a forward linear op y = L(x_1..x_k) + b, ``transpose`` of input i maps a cotangent
g [*out] to L_i^T g [*in_i]. Its own transpose is L_i, so CROWN runs through it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lipbound.autodiff import vjp
from lipbound.ops.base import LinearOp, Params
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

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        inner = get(params["inner"])
        return (inner.apply_linear_one(params["inner_params"], params["index"], A,
                                       params["in_shapes"]),)


register(Transpose())
