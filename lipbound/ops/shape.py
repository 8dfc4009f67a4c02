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
from lipbound.ops.facts import COPY, NormFact
from lipbound.ops.registry import register


class CopyOp(LinearOp):
    """A linear op whose every output element is 0 or a copy of a distinct input element:
    its induced norm is at most 1 in every l_p (:data:`~lipbound.ops.facts.COPY`)."""

    def norm_fact(self, params: Params, index: int) -> NormFact:
        return COPY


def _flat_identity(n_in: int) -> tuple[Tensor, Tensor]:
    return torch.eye(n_in, dtype=torch.float64), torch.zeros(n_in, dtype=torch.float64)


class Reshape(CopyOp):
    """View as per-sample ``shape`` (Flatten, View, Reshape)."""

    kind = "reshape"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return x.reshape(x.shape[0], *params["shape"])

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        return (A.reshape(A.shape[0], *in_shapes[0]),)

    def flat_affine(self, params: Params, n_in: int, out_shape: tuple[int, ...]
                    ) -> tuple[Tensor, Tensor] | None:
        """A flatten (to one dimension of the same length) is the identity in C order."""
        return _flat_identity(n_in) if tuple(out_shape) == (n_in,) else None


class Permute(CopyOp):
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


class Pad(CopyOp):
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


class Slice(CopyOp):
    """x[..., start:end:step] along per-sample dimension ``dim``."""

    kind = "slice"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        index = (slice(None),) * (params["dim"] + 1)
        return x[index + (slice(params["start"], params["end"], params["step"]),)]


class Concat(CopyOp):
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


class Identity(CopyOp):
    """y = x (Identity, Dropout in eval mode, aliases)."""

    kind = "identity"
    exact_sums = True

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return x

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        return (A,)

    def flat_affine(self, params: Params, n_in: int, out_shape: tuple[int, ...]
                    ) -> tuple[Tensor, Tensor]:
        return _flat_identity(n_in)


for _op in (Reshape(), Permute(), Pad(), AvgPool(), Slice(), Concat(), Identity()):
    register(_op)
