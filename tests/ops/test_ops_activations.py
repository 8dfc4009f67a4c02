"""Properties of the elementwise activations added for issue 17 beyond the case table.

- every new op kind passes the table's sampled checks on fixed seeds (the hypothesis test
  samples kinds at random);
- the closed-form derivatives of the smooth ones equal autograd, and their breakpoints split
  f' into monotone pieces (f'' keeps its sign between them on a fine grid);
- jumps: at a degenerate interval on a jump, the bounds hold both one-sided values (softplus's
  threshold switch, ELU(alpha)'s derivative at 0, whose Clarke set is [min(alpha, 1), max]);
- sin / cos: intervals spanning several periods and any slope, and exact ranges;
- PReLU's lowering keeps IBP exact for slopes in [0, 1] and above 1;
- discontinuous ops: the forward-error rule covers an input error that crosses the jump.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lipbound
from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import Precision
from lipbound.ops import registry
from tests.ops.test_ops_soundness import _check_relaxation, check_op_soundness

DT = torch.float64
NEW_KINDS = ("elu", "d_elu", "softplus", "d_softplus", "atan", "d_atan", "erf", "d_erf",
             "gelu_tanh", "d_gelu_tanh", "mish", "d_mish", "sin", "cos", "d_cos",
             "hardshrink", "threshold")


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_new_ops_pass_the_table_checks(kind):
    for seed in range(3):
        check_op_soundness(kind, seed, (0.05, 1.0, 4.0)[seed % 3])


SMOOTH = [("elu", {"alpha": 0.3}), ("elu", {"alpha": 1.6733}), ("softplus", {"threshold": 2.0}),
          ("softplus", {"threshold": math.inf}), ("atan", {}), ("erf", {}), ("gelu_tanh", {}),
          ("mish", {})]


@pytest.mark.parametrize("kind,params", SMOOTH)
def test_closed_form_derivatives_equal_autograd_and_pieces_are_monotone(kind, params):
    op = registry.get(kind)
    dkind, dparams = op.derivative(params)
    for fn in (op.fn_of(params), registry.get(dkind).fn_of(dparams)):
        x = torch.linspace(-12, 12, 24001, dtype=DT)
        x = x[(x - torch.tensor(list(fn.breakpoints) or [99.0], dtype=DT)[:, None]).abs()
              .min(0).values > 1e-6].requires_grad_(True)
        (g,) = torch.autograd.grad(fn.f(x).sum(), x)
        torch.testing.assert_close(fn.df(x), g, rtol=1e-9, atol=1e-12)
        d = fn.df(x.detach())
        edges = [-math.inf, *fn.breakpoints, math.inf]
        for a, b in zip(edges[:-1], edges[1:]):  # f' monotone on each piece
            piece = d[(x.detach() > a) & (x.detach() < b)]
            steps = piece[1:] - piece[:-1]
            assert (steps >= -1e-13).all() or (steps <= 1e-13).all(), (fn.name, a, b)


def test_bounds_hold_both_sides_of_a_jump():
    sp = registry.get("softplus")
    t = 1.5
    box = sp.ibp({"threshold": t}, Interval.point(torch.tensor([t], dtype=DT)))
    lo, hi = box.lower, box.upper
    smooth = math.log1p(math.exp(t))
    assert lo <= t and smooth <= hi  # the switch: t just above, log(1 + e^t) at t
    y = F.softplus(torch.tensor([t, t + 1e-12], dtype=DT), threshold=t)
    iv = Interval(torch.tensor([t - 1e-3], dtype=DT), torch.tensor([t + 1e-3], dtype=DT))
    assert sp.ibp({"threshold": t}, iv).contains(y[None, :].T, 0.0)
    d = registry.get("d_elu")
    zero = Interval.point(torch.zeros(1, dtype=DT))
    for alpha in (0.3, 1.6733):
        b = d.ibp({"alpha": alpha}, zero)
        assert b.lower <= min(alpha, 1.0) and max(alpha, 1.0) <= b.upper
        rel = d.relax({"alpha": alpha}, zero)
        _check_relaxation(rel, [torch.zeros(2, 1, dtype=DT)],
                          torch.tensor([[alpha], [1.0]], dtype=DT))


@pytest.mark.parametrize("kind", ["sin", "cos", "d_cos"])
def test_sinusoids_over_many_periods_and_any_slope(kind):
    op = registry.get(kind)
    l = torch.tensor([-40.0, -3.0, 1.0, 100.0, -7.0, 5.0], dtype=DT)
    u = torch.tensor([45.0, 11.0, 1.2, 112.0, 6.5, 5.0 + 4 * math.pi - 1e-9], dtype=DT)
    grid = l + torch.linspace(0, 1, 40001, dtype=DT)[:, None] * (u - l)
    y = op.apply({}, grid)
    for k in (-1.5, -1.0, -0.7, 0.0, 0.2, 0.999, 1.0, 3.0):
        kk = torch.full_like(l, k)
        _check_relaxation(op.relax({}, Interval(l, u), opt={"k_lower": kk, "k_upper": kk}),
                          [grid], y)
    box = op.ibp({}, Interval(l, u))
    assert box.contains(y, 1e-12)
    # exact ranges (to the margin), not only [-1, 1]
    assert torch.allclose(box.lower, y.min(0).values, atol=1e-8)
    assert torch.allclose(box.upper, y.max(0).values, atol=1e-8)


@pytest.mark.parametrize("slopes", [[0.0, 0.25, 1.0], [1.5, 3.0, 1.0], [0.1, 2.0, 0.9]])
def test_prelu_lowering_keeps_ibp_exact_for_monotone_slopes(slopes):
    m = nn.PReLU(3).double().eval()
    m.weight.data = torch.tensor(slopes, dtype=DT)
    model = nn.Sequential(m).eval()
    x = torch.tensor([-0.3, 0.05, 0.4], dtype=DT)
    lo, up = lipbound.output_bounds(model, x, 0.2, method="ibp")
    with torch.no_grad():
        exact_lo, exact_up = model((x - 0.2)[None])[0], model((x + 0.2)[None])[0]
    assert torch.allclose(lo.reshape(-1), exact_lo, atol=1e-12)
    assert torch.allclose(up.reshape(-1), exact_up, atol=1e-12)


@pytest.mark.parametrize("kind", ["hardshrink", "threshold"])
def test_discontinuous_error_rule_covers_crossing_the_jump(kind):
    from tests.ops.test_ops_soundness import CASES

    op = registry.get(kind)
    params, _ = CASES[kind](torch.Generator().manual_seed(3))
    jump_at = params["breakpoints"][-1]
    x = torch.tensor([jump_at], dtype=DT)  # exact input on the jump
    e = torch.tensor([1e-7], dtype=DT)
    prec = Precision.of(torch.float32)
    bound = op.float_error(params, [e], [x.abs() + e], prec, ivals=[Interval.point(x)])
    for xt in (x - e, x + e):  # the computed input on either side
        assert (op.apply(params, xt) - op.apply(params, x)).abs() <= bound * (1 + 1e-12)
    # without intervals: every jump counts
    assert op.float_error(params, [e], [x.abs() + e], prec) >= bound
