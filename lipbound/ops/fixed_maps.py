"""Fixed linear maps with ops of their own: linear / bilinear interpolation, reflect /
replicate / circular padding, and einsum with one input-dependent operand.

Each is a :class:`~lipbound.ops.base.LinearOp` evaluated by torch's own function in float64
(so its semantics, such as the index map of ``scale_factor`` and ``align_corners``, are
torch's by construction); IBP, CROWN and the Clarke-Jacobian rule (a ``transpose`` node) come
from the linear-op contract. Interpolation weights and padding copies are non-negative, so
the absolute map is the map itself; einsum's absolute map puts ``|c|`` for every constant,
which bounds the absolute coefficients from above (equal when each output coefficient is one
product of constants, as in every contraction with one constant).

einsum with two input-dependent operands is lowered at trace time (:func:`_einsum`) to a
product of broadcast copies summed over the contracted indices (McCormick per product), the
same lowering as a matrix product of two activations.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lipbound.bounds.rounding import Precision
from lipbound.ops.base import LinearOp, Params
from lipbound.ops.registry import register
from lipbound.ops.tracing import Var, broadcast, converts, per_sample_shape, unsupported


class Interpolate(LinearOp):
    """F.interpolate with mode ``linear`` / ``bilinear`` to ``size`` or by ``scale_factor``
    (as the model gave it), ``align_corners`` either way: every output is a convex
    combination of at most 2 (1-d) or 4 (2-d) inputs."""

    kind = "interpolate"
    exact_sums = True

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        sf = params.get("scale_factor")
        kw = {"scale_factor": tuple(sf)} if sf is not None else {"size": tuple(params["size"])}
        return F.interpolate(x, mode=params["mode"], align_corners=params["align_corners"],
                             **kw)

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        nd = len(in_shapes[0]) - 1
        return 2 ** nd + nd  # the taps' sum and one product per dimension in each term

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision) -> Tensor:
        """The linear-op rule, plus the rounding of the weights themselves: torch computes
        each source index ``s (i + 1/2) - 1/2`` (or ``i (n - 1) / (o - 1)``) and its fraction
        in the model's dtype, an absolute error of at most ``4 u (n + 2)`` per weight factor
        (n the largest input size); a product of nd such factors is then off by at most
        ``nd d + d^2`` for nd = 2, summed over the 2^nd taps against the sample's largest
        |x| (amax: the error does not scale with the weights)."""
        base = super().float_error(params, errs, mags, prec)
        m = mags[0]
        nd = m.dim() - 2
        n = max(m.shape[2:])
        d = 4 * prec.u * (n + 2)
        per_tap = nd * d + d * d
        big = m.flatten(1).amax(1).reshape(-1, *([1] * (m.dim() - 1)))
        return base + (2 ** nd) * per_tap * big


class PadMode(LinearOp):
    """F.pad with mode ``reflect``, ``replicate`` or ``circular`` (``pad`` in F.pad order):
    every output element is a copy of one input element (the l_inf norm is 1; an input may
    be copied several times)."""

    kind = "pad_mode"
    exact_sums = True

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return F.pad(x, tuple(params["pad"]), mode=params["mode"])


class Einsum(LinearOp):
    """``torch.einsum(equation, *operands)`` with the input-dependent operand at ``index``
    and the constant ``consts`` at the other places (the equation's first index of the
    input operand is the batch)."""

    kind = "einsum"
    matmul_like = True

    def _operands(self, params: Params, x: Tensor, absolute: bool) -> list[Tensor]:
        consts = [c.to(x.dtype) for c in params["consts"]]
        if absolute:
            consts = [c.abs() for c in consts]
        consts.insert(int(params["index"]), x)
        return consts

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return torch.einsum(params["equation"], *self._operands(params, x, absolute))

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        """Each output sums (contracted size) products of (number of operands) factors."""
        eq = params["equation"]
        lhs, out = eq.split("->")
        sizes: dict[str, int] = {}
        terms = lhs.split(",")
        shapes = [None] * len(terms)
        shapes[int(params["index"])] = (1, *in_shapes[0])
        k = 0
        for i in range(len(terms)):
            if shapes[i] is None:
                shapes[i] = tuple(params["consts"][k].shape)
                k += 1
        for t, s in zip(terms, shapes):
            sizes.update(zip(t, s))
        contracted = math.prod(v for c, v in sizes.items() if c not in out)
        return contracted + len(terms)


for _op in (Interpolate(), PadMode(), Einsum()):
    register(_op)


# -- ATen converters (lipbound.ops.tracing)

def _interp(mode: str):
    def convert(b, fx, x, output_size=None, align_corners=False, scale_factors=None):
        params = {"mode": mode, "align_corners": bool(align_corners),
                  "size": tuple(per_sample_shape(fx)[1:]), "scale_factor": None}
        if scale_factors is not None:
            params["scale_factor"] = tuple(float(v) for v in scale_factors)
        b.add(fx, "interpolate", [x], params)

    return convert


converts("aten.upsample_bilinear2d.vec")(_interp("bilinear"))
converts("aten.upsample_linear1d.vec")(_interp("linear"))


@converts("aten.upsample_bilinear2d.default")
def _bilinear2d(b, fx, x, output_size, align_corners, scales_h=None, scales_w=None):
    sf = None if scales_h is None or scales_w is None else (scales_h, scales_w)
    _interp("bilinear")(b, fx, x, output_size, align_corners, sf)


@converts("aten.upsample_linear1d.default")
def _linear1d(b, fx, x, output_size, align_corners, scales=None):
    _interp("linear")(b, fx, x, output_size, align_corners, None if scales is None else
                      (scales,))


def _padder(mode: str):
    def convert(b, fx, x, pad):
        b.add(fx, "pad_mode", [x], {"pad": tuple(int(p) for p in pad), "mode": mode})

    return convert


converts("aten.reflection_pad1d.default", "aten.reflection_pad2d.default")(_padder("reflect"))
converts("aten.replication_pad1d.default", "aten.replication_pad2d.default")(
    _padder("replicate"))
converts("aten._pad_circular.default")(_padder("circular"))


def _parse(fx, equation: str, ndims: Sequence[int]) -> tuple[list[str], str]:
    """Operand index strings and the output's, with ``...`` spelled out and the implicit
    output (letters used once, sorted) made explicit."""
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ndims):
        raise unsupported(fx, "the equation does not match the operands")
    free = "".join(c for c in string.ascii_letters if c not in eq)
    counts = [nd - (len(t) - 3) for t, nd in zip(terms, ndims) if "..." in t]
    ell = free[:max(counts, default=0)]
    out_terms = [t.replace("...", ell[len(ell) - (nd - (len(t) - 3)):]) if "..." in t else t
                 for t, nd in zip(terms, ndims)]
    if "->" not in eq:
        letters = "".join(out_terms)
        rhs = ell + "".join(sorted(c for c in set(letters) if letters.count(c) == 1
                                   and c not in ell))
    else:
        rhs = rhs.replace("...", ell)
    for t in out_terms:
        if len(set(t)) != len(t):
            raise unsupported(fx, "einsum with a repeated index in one operand (a diagonal) "
                                  "is not supported")
    return out_terms, rhs


@converts("aten.einsum.default")
def _einsum(b, fx, equation, operands, path=None):
    ndims = [len(o.shape) + 1 if isinstance(o, Var) else o.dim() for o in operands]
    terms, out = _parse(fx, equation, ndims)
    varpos = [i for i, o in enumerate(operands) if isinstance(o, Var)]
    batch = terms[varpos[0]][0]
    if any(terms[i][0] != batch for i in varpos) or not out.startswith(batch) or any(
            batch in terms[i] for i in range(len(terms)) if i not in varpos):
        raise unsupported(fx, "einsum must keep the batch index first in every input-dependent "
                              "operand and in the output, and out of the constants")
    eq = ",".join(terms) + "->" + out
    if len(varpos) == 1:
        consts = tuple(o.double() for i, o in enumerate(operands) if i != varpos[0])
        return b.add(fx, "einsum", [operands[varpos[0]]],
                     {"equation": eq, "consts": consts, "index": varpos[0]})
    if len(varpos) != 2 or len(operands) != 2:
        raise unsupported(fx, "einsum of more than two operands with two input-dependent ones "
                              "is not supported")
    _einsum_product(b, fx, [terms[0][1:], terms[1][1:]], out[1:], operands)


def _einsum_product(b, fx, terms: list[str], out: str, xs: list[Var]) -> None:
    """Two input-dependent operands (per-sample index strings): permute each to the order of
    ``out`` + contracted letters, broadcast to the full shape, multiply, sum the contracted."""
    sizes = {c: s for t, x in zip(terms, xs) for c, s in zip(t, x.shape)}
    contracted = "".join(c for c in dict.fromkeys(terms[0] + terms[1]) if c not in out)
    full = out + contracted
    fshape = tuple(sizes[c] for c in full)
    parts = []
    for k, (t, x) in enumerate(zip(terms, xs)):
        order = sorted(t, key=full.index)
        perm = tuple(t.index(c) for c in order)
        if perm != tuple(range(len(t))):
            x = b.aux(fx, f"p{k}", "permute", [x], tuple(x.shape[i] for i in perm),
                      {"dims": perm})
        shape = tuple(sizes[c] if c in t else 1 for c in full)
        if shape != x.shape:
            x = b.aux(fx, f"r{k}", "reshape", [x], shape, {"shape": shape})
        parts.append(broadcast(b, fx, x, fshape, f"b{k}"))
    prod = b.aux(fx, "prod", "mul", parts, fshape)
    if not contracted:
        return b.add(fx, "reshape", [prod], {"shape": fshape})
    dims = tuple(range(len(out), len(full)))
    b.add(fx, "sum", [prod], {"dims": dims, "keepdim": False, "scale": 1.0})
