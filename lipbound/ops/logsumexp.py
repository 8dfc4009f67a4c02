"""logsumexp over per-sample dims: a composite op (:class:`~lipbound.ops.composite.Composite`),
one node in the traced graph (its rounding facts describe torch's fused kernel) and lowered
before bounding to

    ``lse(x) = mean(x) + log(sum_j exp(x_j - mean(x)))``

(``center`` -> ``exp`` -> ``sum`` -> ``log``, plus the mean, one ``add``), an exact rewrite.
The shift by the mean plays the part of the kernel's max-shift without relaxing a max: the
centred values are one exact linear node, every ``exp`` term is positive, so the sum's lower
bound is positive and ``log`` stays in its domain, and the exponents are at most the row's
spread (``max - mean``), so nothing overflows unless the input's own bounds span ~700.
Convexity is kept where it helps: ``exp`` of a linear map has a tangent lower and a chord
upper line, ``log`` a chord lower and a tangent upper line. Its Jacobian (softmax of the
row) comes from the primitives' chain rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import Precision, gamma
from lipbound.graph.ir import Node
from lipbound.ops.base import Params
from lipbound.ops.composite import KERNEL_SAFETY, Composite, _Lowering
from lipbound.ops.registry import register
from lipbound.ops.smooth import EVAL_ULPS
from lipbound.ops.tracing import converts, reduction_dims


class LogSumExp(Composite):
    """log(sum(exp(x))) over per-sample ``dims`` (``keepdim``)."""

    kind = "logsumexp"

    def apply(self, params: Params, x: Tensor) -> Tensor:
        dims = tuple(d + 1 for d in params["dims"])
        return torch.logsumexp(x, dims, keepdim=bool(params["keepdim"]))

    def lower(self, node: Node, in_shapes: Sequence[tuple[int, ...]]) -> list[Node]:
        low = _Lowering(node)
        shape = tuple(in_shapes[0])
        dims = tuple(params_dims(node.params))
        n = math.prod(shape[d] for d in dims)
        red = tuple(1 if i in dims else s for i, s in enumerate(shape))
        x = node.inputs[0]
        c = low.add("center", "center", [x], shape, {"dims": dims})
        e = low.add("exp", "exp", [c], shape)
        s = low.add("sum", "sum", [e], red, {"dims": dims, "keepdim": True, "scale": 1.0})
        lg = low.add("log", "log", [s], red)
        m = low.add("mean", "sum", [x], red, {"dims": dims, "keepdim": True, "scale": 1.0 / n})
        keep = bool(node.params["keepdim"])
        y = low.add("add", "add", [m, lg], red, {"coeffs": (1.0, 1.0)}, last=keep)
        if not keep:
            low.add("squeeze", "reshape", [y], node.shape, {"shape": tuple(node.shape)},
                    last=True)
        return low.nodes

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision, ivals: Sequence[Interval] | None = None,
                    inner=None) -> Tensor:
        """Propagated: logsumexp is 1-Lipschitz from the l_inf norm of a row (its gradient
        is the row's softmax). Kernel (``m = max``, ``t = x - m``, ``exp``, sum, ``log``,
        ``+ m``), to first order with |t| <= 2 M (M the row's largest |x|) and c =
        EVAL_ULPS ulps per library call: ``t`` is off by ``2 u M``, each exp by that plus c
        ulps, the sum of K terms in [1, K] by ``gamma_K`` more, its log by the sum's relative
        error plus ``c u log K``, the final sum by ``u (M + log K)``: in all at most
        ``3 u M + gamma_(K + 2c + 2) (1 + log K)``, times ``KERNEL_SAFETY``."""
        dims = tuple(d + 1 for d in params["dims"])
        e, m = errs[0], mags[0]
        K = math.prod(e.shape[d] for d in dims)
        keep = bool(params["keepdim"])
        e_row, m_row = e.amax(dims, keepdim=keep), m.amax(dims, keepdim=keep)
        g = gamma(K + 2 * EVAL_ULPS + 2, prec.u)
        ev = 3 * prec.u * m_row + g * (1 + math.log(K))
        return e_row + KERNEL_SAFETY * ev

    def magnitude(self, params: Params, *mags: Tensor) -> Tensor:
        """|lse(x)| <= max |x| + log K (the terms the lowering sums are bounded by its
        nodes' own facts)."""
        dims = tuple(d + 1 for d in params["dims"])
        K = math.prod(mags[0].shape[d] for d in dims)
        return mags[0].amax(dims, keepdim=bool(params["keepdim"])) + math.log(K)


def params_dims(params: Params) -> tuple[int, ...]:
    return tuple(int(d) for d in params["dims"])


register(LogSumExp())


@converts("aten.logsumexp.default")
def _logsumexp(b, fx, x, dim, keepdim=False):
    b.add(fx, "logsumexp", [x], {"dims": reduction_dims(fx, x, dim), "keepdim": bool(keepdim)})
