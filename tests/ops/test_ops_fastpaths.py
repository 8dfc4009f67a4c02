"""The fast paths of CROWN back-substitution agree with the plain formulas they replace.

- ``NonlinearOp.crown_backward`` computes the bias of a relaxation whose lower bias is zero (the
  ReLU family) as ``relu(A) @ upper_bias``; it must equal ``sum A * where(A > 0, ub, lb)`` and the
  back-substituted bound must stay above sampled ``<A, f(x)>``.
- ``LinearOp.apply_linear_one`` (used by the transpose of multi-input linear ops, e.g. residual
  additions) must equal the linear part with the other inputs set to zero.
"""

from __future__ import annotations

import pytest
import torch

from lipbound.bounds.interval import Interval
from lipbound.ops import registry
from lipbound.ops.base import Relaxation

DT = torch.float64


def _intervals(g, B, shape):
    c = torch.randn(B, *shape, generator=g, dtype=DT)
    r = torch.rand(B, *shape, generator=g, dtype=DT) * 2
    return Interval(c - r, c + r)


def _reference(A, rel: Relaxation):
    pos = A > 0
    bias = (A * torch.where(pos, rel.upper_bias, rel.lower_bias)).flatten(2).sum(-1)
    return A * torch.where(pos, rel.upper_slopes[0], rel.lower_slopes[0]), bias


@pytest.mark.parametrize("kind,params", [("relu", {}), ("leaky_relu", {"negative_slope": 0.1}),
                                         ("sigmoid", {})])
@pytest.mark.parametrize("B,S", [(1, 7), (3, 5)])
def test_crown_backward_matches_reference_and_bounds_samples(kind, params, B, S):
    g = torch.Generator().manual_seed(B * 31 + S)
    op = registry.get(kind)
    iv = _intervals(g, B, (4, 3))
    rel = op.relax(params, Interval(iv.lower.unsqueeze(1), iv.upper.unsqueeze(1)))
    A = torch.randn(B, S, 4, 3, generator=g, dtype=DT)
    (Ax,), bias = op.crown_backward(params, A, rel)
    ref_Ax, ref_bias = _reference(A, rel)
    assert torch.equal(Ax, ref_Ax)
    assert torch.allclose(bias, ref_bias, rtol=1e-12, atol=1e-12)
    x = iv.lower + torch.rand(256, B, 4, 3, generator=g, dtype=DT) * (iv.upper - iv.lower)
    y = op.apply(params, x.reshape(-1, 4, 3)).reshape(x.shape)
    val = torch.einsum("nbij,bsij->nbs", y, A)
    bound = torch.einsum("nbij,bsij->nbs", x, Ax) + bias
    assert (val <= bound + 1e-9 * (1 + val.abs())).all()


def test_sum_apply_linear_one_matches_zero_padding():
    op = registry.get("add")
    params = {"coeffs": (1.0, -2.5, 0.5)}
    shapes = [(2, 3)] * 3
    x = torch.randn(4, 2, 3, dtype=DT)
    for idx in range(3):
        xs = [x if i == idx else torch.zeros_like(x) for i in range(3)]
        assert torch.equal(op.apply_linear_one(params, idx, x, shapes),
                           op.apply_linear(params, *xs))


def test_transpose_of_sum_is_exact():
    tr = registry.get("transpose")
    params = {"inner": "add", "inner_params": {"coeffs": (2.0, -1.0)}, "index": 1,
              "in_shapes": [(5,), (5,)]}
    g = torch.randn(3, 5, dtype=DT)          # cotangent of the sum's output
    A = torch.randn(3, 5, dtype=DT)          # coefficients on the transpose's output
    (back,) = tr.vjp(params, A, [(5,)])
    # <A, T(g)> == <T^T(A), g> with T(g) = -g (input 1 of 2 x0 - x1)
    assert torch.allclose((A * tr.apply_linear(params, g)).sum(), (back * g).sum())
    assert torch.allclose(back, -A)
