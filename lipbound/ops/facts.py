"""Value types in which an op states what generic code needs to know about it.

Generic code (the Clarke-Jacobian builder, the naive Lipschitz product, the exact solvers'
layer reader, branch and bound) asks the op for these facts instead of testing its name:

- :class:`JacobianRule` (:meth:`~lipbound.ops.base.Op.jacobian_rule`): how the cotangent of
  the op's output reaches one of its inputs;
- :class:`NormFact` (:meth:`~lipbound.ops.base.LinearOp.norm_fact`): what the op knows about
  the induced norms of its linear map (the naive bound computes the rest numerically);
- :class:`WindowMap` (:meth:`~lipbound.ops.base.LinearOp.window_map`): how its linear map
  acts on CROWN coefficients that are zero outside a window (:mod:`lipbound.propagate.windows`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

#: ``g -> L_i^T g``: a ``transpose`` node of the op (every linear op)
TRANSPOSE = "transpose"
#: ``g -> kind(x_i, g)``: one node reading the forward input and the cotangent (ReLU's switch,
#: max pooling's routing)
GATE = "gate"
#: ``g -> mul(d, g)`` with ``d = kind(x_i)`` the op's Clarke derivative as another registered
#: op on the same input (or the op's own output, ``kind`` None: exp)
CHAIN = "chain"
#: ``g -> mul(x_j, g)``, j the other input: the product rule of ``x_0 * x_1``
PRODUCT = "product"


@dataclass(frozen=True)
class JacobianRule:
    """How the cotangent g of a node's output maps to the cotangent of its input i.

    The set of values the rule's nodes can take at x must contain every Clarke generalised
    derivative of the op at x applied to g (set-valued where the op has kinks), so the chain
    rule over the whole graph contains the Clarke Jacobian.
    """

    form: str
    kind: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class NormFact:
    """What a linear op knows about the induced p -> p norm of input i's map.

    ``every_p``: an upper bound valid for every p (copy ops: 1; a diagonal scale: max |s|);
    ``copy``: each output element is 0 or a copy of a distinct input element (norm 1);
    ``matrix``: the map is ``x -> W x`` on the last dimension with this W [out, in];
    ``conv``: (weight, groups, stride, dilation) of a convolution, whose unfolded-kernel
    bound is another l_2 candidate. All None / False: only the numerical bounds apply.
    """

    every_p: float | None = None
    copy: bool = False
    matrix: Tensor | None = None
    conv: tuple[Tensor, int, tuple[int, ...], tuple[int, ...]] | None = None


#: the fact of a map that only moves values (reshape, permute, pad, slice, concat part)
COPY = NormFact(every_p=1.0, copy=True)
#: nothing known in closed form
UNKNOWN = NormFact()


#: :class:`WindowMap` forms. SAME: the coefficients pass unchanged (identity)
SAME = "same"
#: times ``scale`` (a number or a tensor broadcastable to the spatial node [C, H, W])
SCALE = "scale"
#: input i's coefficients are ``coeffs[i]`` times the output's (weighted sums of inputs)
COEFFS = "coeffs"
#: a spatial [C, H, W] window becomes columns of the flat (C order) vector (a flatten)
FLATTEN = "flatten"
#: a 2-d sliding-window map with ``geometry`` ((k, s, p, d) per spatial axis) whose padding-free
#: ``kernel`` maps a zero-extended region [N, C, h, w] (``forward``: the op's own map on its
#: input; else its transpose on the output's window)
SLIDING = "sliding"
#: ``x -> x W^T`` on the last dimension with W = ``weight``: column-sparse coefficients meet
#: only the columns of W they select
COLUMNS = "columns"

#: windowed back-substitution through a non-elementwise op (``NonlinearOp.window_rule``):
#: coefficients over the outputs of a max pooling (relaxation a ``PoolSelection``) ...
POOL = "pool"
#: ... or over the pooled input of its Clarke-Jacobian node (relaxation a ``Routing``)
POOL_GRAD = "pool_grad"


@dataclass(frozen=True, eq=False)
class WindowMap:
    """How the map CROWN applies to a linear op's coefficients acts on coefficients that are
    zero outside a window (or outside some columns of a flat node): each entry of the result
    is the same sum as in the dense computation without its zero terms, so the windowed step
    is exact. ``form`` is one of the constants above; the other fields belong to it."""

    form: str
    scale: Any = None
    coeffs: tuple[float, ...] = ()
    geometry: tuple[tuple[int, int, int, int], ...] | None = None
    kernel: Callable[[Tensor], Tensor] | None = None
    forward: bool = False
    weight: Tensor | None = None
