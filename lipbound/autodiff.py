"""Vector-Jacobian products by reverse-mode autodiff, without torch's first-use import of sympy.

``torch.autograd.grad(y, xs, c)`` with an explicit cotangent ``c`` imports
``torch.fx.experimental.symbolic_shapes`` (and sympy, one to several seconds) the first time a
process calls it (torch 2.x ``_make_grads``). :func:`vjp` returns the same tensors as the
gradient of ``sum(y * c)``: the backward pass of the sum hands ones to the product, whose
backward multiplies them by ``c`` (exact: 1 * c = c), so the cotangent that reaches ``y`` is
``c`` bit for bit and everything after it is the same computation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

#: compute via sum(y * c) (False: pass the cotangent to torch, as torch.autograd.grad would)
VIA_SUM = True


def vjp(y: Tensor, inputs: Tensor | Sequence[Tensor], cotangent: Tensor, *,
        create_graph: bool = False, retain_graph: bool | None = None,
        allow_unused: bool = False) -> tuple[Tensor | None, ...]:
    """``torch.autograd.grad(y, inputs, cotangent, ...)``, bit for bit."""
    kw = {"create_graph": create_graph, "retain_graph": retain_graph,
          "allow_unused": allow_unused}
    same = (cotangent.shape == y.shape and cotangent.dtype == y.dtype
            and cotangent.device == y.device)
    if not (VIA_SUM and same):
        return torch.autograd.grad(y, inputs, cotangent, **kw)
    return torch.autograd.grad((y * cotangent).sum(), inputs, **kw)
