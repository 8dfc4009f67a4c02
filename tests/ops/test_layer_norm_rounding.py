"""The float32 LayerNorm error rule (``Norm.float_error`` with
:func:`lipbound.ops.composite.moment_errors`) against torch's own float32 kernel.

Rows chosen to stress the moments: a large common offset over a small spread (the mean's
rounding then dominates the variance's), sorted rows (Welford's partial means far from the
final one), variances near eps, and rows of 2 to 1024 values. The float64 evaluation stands
in for the exact value (its own error is ~1e-16 relative, far below the float32 rule)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import Precision
from lipbound.ops import registry

F32 = Precision.of(torch.float32)


def _rows(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(6, n, generator=g, dtype=torch.float64)
    rows = torch.stack([
        z[0],                                   # ordinary
        100.0 + 0.01 * z[1],                    # offset 1e4 times the spread
        -30.0 + 1e-3 * z[2],                    # negative offset, tinier spread
        torch.sort(5.0 + z[3])[0],              # sorted: Welford's partial means drift
        1e-3 * z[4],                            # variance near eps = 1e-5
        torch.where(z[5] > 0, 1.0, -1.0) * 50,  # two values, large
    ])
    return rows.float()  # exactly representable inputs: the kernel's rounding alone


@pytest.mark.parametrize("n", [2, 3, 8, 64, 257, 1024])
def test_float32_layer_norm_within_the_rule(n):
    op = registry.get("layer_norm", "")
    g = torch.Generator().manual_seed(n)
    w = (torch.rand(n, generator=g, dtype=torch.float64) * 2 + 0.1).float()
    b = torch.randn(n, generator=g, dtype=torch.float64).float()
    params = {"ndim": 1, "eps": 1e-5, "weight": w.double(), "bias": b.double()}
    x = _rows(n, seed=n)
    computed = F.layer_norm(x, (n,), w, b, 1e-5).double()
    exact = F.layer_norm(x.double(), (n,), w.double(), b.double(), 1e-5)
    xd = x.double()
    bound = op.float_error(params, [torch.zeros_like(xd)], [xd.abs()], F32,
                           ivals=[Interval(xd, xd)])
    gap = (computed - exact).abs()
    assert bool((gap <= bound).all()), float((gap / bound).max())
    # the moments' rule is what bounds it: the one-pass rule (2M)^2 is far looser here
    # the offset rows: the moments' rule is far below the one-pass rule gamma (2M)^2
    assert float((bound[1:3] / _old_rule(op, params, xd)[1:3]).max()) < 1e-2


def _old_rule(op, params, xd):
    """The same rule with GroupNorm's any-algorithm moments (gamma_(8n+16) (2M)^2)."""
    old = op.kind
    try:
        op.kind = "group_norm_like"
        return op.float_error(params, [torch.zeros_like(xd)], [xd.abs()], F32,
                              ivals=[Interval(xd, xd)])
    finally:
        op.kind = old


@pytest.mark.parametrize("n", [4, 16, 64])
def test_propagated_input_error_within_the_rule(n):
    """An input error e moves the output by at most the rule's propagated term: each row
    perturbed by e sign(J_i) (the worst first-order direction for output i) and at random,
    LayerNorm in float64 (its own rounding ~1e-16, inside the rule's kernel term)."""
    op = registry.get("layer_norm", "")
    g = torch.Generator().manual_seed(100 + n)
    z = torch.randn(4, n, generator=g, dtype=torch.float64)
    x = torch.stack([z[0], 0.05 * z[1], 3.0 + z[2], z[3].sign() + 0.1 * z[0]])
    w = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1
    params = {"ndim": 1, "eps": 1e-5, "weight": w, "bias": None}
    e = 1e-4 * torch.ones_like(x)
    bound = op.float_error(params, [e], [x.abs() + e], Precision.of(torch.float64),
                           ivals=[Interval(x, x)])

    def ln(v):
        return F.layer_norm(v, (n,), w, None, 1e-5)

    worst = []
    for r in range(x.shape[0]):
        J = torch.autograd.functional.jacobian(lambda v: ln(v[None])[0], x[r])
        deltas = e[r] * torch.sign(J)  # [n outputs, n inputs]: output i's worst direction
        worst.append((ln(x[r] + deltas) - ln(x[r][None])).diagonal())
    gap = torch.stack(worst).abs()
    rand = (torch.rand(200, *x.shape, generator=g, dtype=torch.float64) * 2 - 1) * e
    gap_rand = (ln(x + rand) - ln(x)).abs().amax(0)
    assert bool((gap <= bound).all()), float((gap / bound).max())
    assert bool((gap_rand <= bound).all())
