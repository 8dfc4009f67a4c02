"""How the rounding of a forward pass reaches the output, with signs (backward, like CROWN).

Write ``eps_n`` for the error (computed - exact value) of node n of a model's forward pass.
An affine op gives ``eps_n = L(eps_inputs) + delta_n`` with ``|delta_n|`` at most its own
rounding (the op's ``float_error`` at zero input errors); an elementwise op with stated
``error_slopes`` gives ``eps_n = s * eps_input + delta_n`` with s in the stated range
(``delta_n``: its ``eval_error``). Every other node (inputs, constants, other ops) is a leaf:
``|eps_n|`` is at most its forward error bound ``errs[n]``. Unrolled from the output, ``C eps``
is a sum of ``A_n delta_n`` and ``A_leaf eps_leaf`` whose coefficients A are products of the
transposed maps and slopes: :func:`error_flow` carries them back as intervals (centre c,
radius r) and sums ``(|c| + r) |delta|``. Where the forward walk bounds an error passed
through two layers by ``|W2| |W1| e``, this keeps ``|c W2 S W1| e``, which cancels.

The walk runs in floating point too: each transpose's rounding of the centre (Higham's
``gamma_n |L|^T |c|`` with n every element the op touches) is added to the radius, the slope
intervals are widened by an ulp, and the nonnegative sum is scaled by ``1 + SAFETY gamma_N``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval, sum_elements
from lipbound.bounds.rounding import SAFETY, Precision, gamma, unit_roundoff
from lipbound.graph.ir import CONST, INPUT, Graph, Node
from lipbound.ops import registry

Coef = tuple[Tensor, Tensor]  # centre, radius: [B, S, *shape]


def error_flow(raw: Graph, prec: Precision, C: Tensor, ivs: Mapping[str, Interval],
               errs: Mapping[str, Tensor]) -> Tensor:
    """Bound [B, S] on |C (forward pass - real function)| at ``raw``'s output, given the
    intervals ``ivs`` of the exact node values and forward error bounds ``errs`` of every
    node (:func:`lipbound.propagate.rounding.execution_error`'s walk); C: [S, K]."""
    out = raw[raw.output]
    B = errs[raw.input].shape[0]
    A0 = C.reshape(1, C.shape[0], *out.shape).expand(B, -1, *out.shape)
    pending: dict[str, Coef] = {raw.output: (A0, torch.zeros_like(A0))}
    total = torch.zeros(B, C.shape[0], dtype=C.dtype, device=C.device)
    u = unit_roundoff(C.dtype)
    count = 0
    for n in reversed(raw.nodes):
        if n.name not in pending:
            continue
        c, r = pending.pop(n.name)
        step = _step(n, c, r, ivs, errs, prec, u)
        count += n.numel + sum(raw[s].numel for s in n.inputs) + 8
        if step is None:  # a leaf: its whole error
            total = total + _dot(c.abs() + r, errs[n.name])
            continue
        local, parts = step
        total = total + _dot(c.abs() + r, local)
        for src, part in zip(n.inputs, parts):
            if part is not None:
                pending[src] = part if src not in pending else _add(pending[src], part, u)
    return total * (1 + SAFETY * gamma(count, u))


def _dot(A: Tensor, t: Tensor) -> Tensor:
    return sum_elements(A * t.unsqueeze(1))


def _add(a: Coef, b: Coef, u: float) -> Coef:
    c = a[0] + b[0]
    return c, a[1] + b[1] + u * c.abs()


def _step(n: Node, c: Tensor, r: Tensor, ivs, errs, prec: Precision, u: float
          ) -> tuple[Tensor, list[Coef | None]] | None:
    """(own rounding bound delta_n, coefficients of the inputs) of a node the flow passes,
    or None for a leaf."""
    if n.op in (INPUT, CONST):
        return None
    op = registry.get(n.op, n.where)
    mags = [ivs[s].abs_max() + errs[s] for s in n.inputs]
    if op.linear:
        local = op.float_error(n.params, [torch.zeros_like(errs[s]) for s in n.inputs], mags,
                               prec)
        shapes = [tuple(ivs[s].lower.shape[1:]) for s in n.inputs]
        g = gamma(n.numel + sum(int(torch.Size(s).numel()) for s in shapes), u)
        cs = _transpose(op, n.params, c, shapes, absolute=False)
        rs = _transpose(op, n.params, r + g * c.abs(), shapes, absolute=True)
        return local, [None if a is None else (a, b) for a, b in zip(cs, rs)]
    if len(n.inputs) != 1 or tuple(ivs[n.inputs[0]].lower.shape[1:]) != tuple(n.shape):
        return None
    src = n.inputs[0]
    slopes = op.error_slopes(n.params, ivs[src], errs[src])
    if slopes is None:
        return None
    lo, hi = slopes
    sc = (lo + hi) / 2
    sr = (hi - lo) / 2 + u * (lo.abs() + hi.abs())  # [sc - sr, sc + sr] contains [lo, hi]
    sc, sr = sc.unsqueeze(1), sr.unsqueeze(1)
    c2 = c * sc
    r2 = c.abs() * sr + r * (sc.abs() + sr) + u * c2.abs()
    local = op.eval_error(n.params, mags[0], op.magnitude(n.params, *mags), prec)
    local = torch.as_tensor(local, dtype=c.dtype, device=c.device).expand_as(errs[n.name])
    return local, [(c2, r2)]


def _transpose(op, params, A: Tensor, in_shapes: Sequence[tuple[int, ...]], absolute: bool
               ) -> list[Tensor | None]:
    """L^T A (or |L|^T A) for each input of a linear op, A [B, S, *out] -> [B, S, *in_i]
    (autograd of the op's own linear part, so every linear op has it)."""
    B, S = A.shape[:2]
    xs = [torch.zeros((B * S, *s), dtype=A.dtype, device=A.device, requires_grad=True)
          for s in in_shapes]
    with torch.enable_grad():
        y = op.apply_linear(params, *xs, absolute=absolute)
        grads = torch.autograd.grad(y, xs, A.reshape(B * S, *A.shape[2:]), allow_unused=True)
    return [None if g is None else g.reshape(B, S, *g.shape[1:]) for g in grads]
