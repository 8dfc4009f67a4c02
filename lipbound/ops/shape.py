"""Weight-free linear operators: reshapes, permutations, padding, pooling, slicing, concat.

Their absolute versions equal themselves (non-negative coefficients); transposes come from the
generic autodiff ``vjp`` unless a cheaper exact one is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lipbound.ops.base import LinearOp, Params
from lipbound.ops.registry import register


class Reshape(LinearOp):
    """View as per-sample ``shape`` (Flatten, View, Reshape)."""

    kind = "reshape"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return x.reshape(x.shape[0], *params["shape"])

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        return (A.reshape(A.shape[0], *in_shapes[0]),)


class Permute(LinearOp):
    """Permutation of the per-sample dimensions (``dims`` excludes the batch dimension)."""

    kind = "permute"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return x.permute(0, *[d + 1 for d in params["dims"]])

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        inv = [0] * len(params["dims"])
        for i, d in enumerate(params["dims"]):
            inv[d] = i
        return (A.permute(0, *[d + 1 for d in inv]),)


class Pad(LinearOp):
    """Zero padding, ``pad`` in F.pad order (last dimension first)."""

    kind = "pad"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return F.pad(x, params["pad"])


class AvgPool(LinearOp):
    """Average pooling (1-d or 2-d) with F.avg_pool semantics; params kernel_size, stride,
    padding, ceil_mode, count_include_pad, divisor_override, ndim."""

    kind = "avg_pool"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return self.rounded_ops(params, in_shapes) - 1  # the windows reaching a pixel

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        k = params["kernel_size"]
        taps = 1
        for v in (k if isinstance(k, (tuple, list)) else (k,) * params.get("ndim", 2)):
            taps *= v
        return taps + 1  # the window's sum and the division

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        if params.get("ndim", 2) == 1:
            return F.avg_pool1d(x, params["kernel_size"], params["stride"], params["padding"],
                                params["ceil_mode"], params["count_include_pad"])
        return F.avg_pool2d(x, params["kernel_size"], params["stride"], params["padding"],
                            params["ceil_mode"], params["count_include_pad"],
                            params.get("divisor_override"))


class Slice(LinearOp):
    """x[..., start:end:step] along per-sample dimension ``dim``."""

    kind = "slice"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        index = (slice(None),) * (params["dim"] + 1)
        return x[index + (slice(params["start"], params["end"], params["step"]),)]


class Concat(LinearOp):
    """Concatenation along per-sample dimension ``dim``."""

    kind = "concat"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, *xs: Tensor, absolute: bool = False) -> Tensor:
        return torch.cat(xs, dim=params["dim"] + 1)

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        sizes = [s[params["dim"]] for s in in_shapes]
        return tuple(A.split(sizes, dim=params["dim"] + 1))


class Identity(LinearOp):
    """y = x (Identity, Dropout in eval mode, aliases)."""

    kind = "identity"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return x

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        return (A,)


for _op in (Reshape(), Permute(), Pad(), AvgPool(), Slice(), Concat(), Identity()):
    register(_op)
