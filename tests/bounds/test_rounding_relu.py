"""The forward-pass rounding allowance through ReLU (issue 17: the residual block's gap).

lipbound's CROWN on conv + BatchNorm residual blocks equals auto_LiRPA's; its output bounds
were wider only by the allowance for the model's float32 forward pass, which carried every
input error through every ReLU. An error of a stably negative input dies there (the computed
output is exactly 0), so :meth:`LeakyReLU.float_error` passes ``|k| e`` where the interval
[l, u] of the exact input has ``u + e <= 0``. Checked here:

- the rule against float32 evaluations at sampled exact/computed input pairs, including
  computed inputs just across 0 from a negative interval;
- the output bounds of a seeded family of residual blocks contain the float32 and float64
  forward passes at sampled points and at the centre (eps 0, where only the allowance
  separates the bounds from the value);
- on that family the allowance is never larger than with the Lipschitz rule, and smaller on
  every model.

Mutation checks (by hand): with ``upper <= 0`` instead of ``upper + e <= 0`` in the rule the
first test fails; with the intervals not passed to ReLU (``rounding.execution_error`` using
``interval_facts`` alone) the last test fails.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import lipbound
from lipbound.bounds.domains import make_domain
from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import Precision
from lipbound.inputs import get_traced
from lipbound.ops import registry
from lipbound.ops.relu_like import LeakyReLU
from lipbound.propagate.driver import prepare_state
from lipbound.propagate.rounding import execution_error
from tests.user_models import residual_family

F32 = Precision.of(torch.float32)


@pytest.mark.parametrize("kind,slope", [("relu", 0.0), ("leaky_relu", 0.1)])
def test_relu_error_rule_contains_float32_evaluations(kind: str, slope: float) -> None:
    op = registry.get(kind)
    params = {"negative_slope": slope}
    gen = torch.Generator().manual_seed(7)
    n = 20000
    e = torch.rand(n, generator=gen, dtype=torch.float64) * 1e-3
    # intervals: below 0 by less than e (an error can cross 0), well below, across, above
    which = torch.randint(0, 4, (n,), generator=gen)
    u = torch.where(which == 0, -e * torch.rand(n, generator=gen, dtype=torch.float64),
                    torch.where(which == 1, -1 - torch.rand(n, generator=gen, dtype=torch.float64),
                                torch.rand(n, generator=gen, dtype=torch.float64) + 0.1))
    lo = torch.where(which == 3, u * 0.5, u - torch.rand(n, generator=gen, dtype=torch.float64))
    x = lo + (u - lo) * torch.rand(n, generator=gen, dtype=torch.float64)
    x = torch.where(torch.rand(n, generator=gen) < 0.5, u, x)  # exact input at its top
    d = e * torch.sign(torch.rand(n, generator=gen) - 0.3).to(torch.float64)  # mostly +e
    xc = (x + d).float()
    xc = torch.where(((xc.double() - x).abs() > e), torch.nextafter(xc, x.float()), xc)
    assert bool(((xc.double() - x).abs() <= e).all())
    computed = op.apply(params, xc[None])[0].double()  # the float32 evaluation
    exact = op.apply(params, x[None])[0]
    mags = [(torch.maximum(lo.abs(), u.abs()) + e)[None]]
    bound = op.float_error(params, [e[None]], mags, F32, ivals=[Interval(lo[None], u[None])])[0]
    gap = (computed - exact).abs()
    assert bool((gap <= bound).all()), float((gap - bound).max())
    # the rule is tighter than the Lipschitz one where the interval is far below 0
    far = which == 1
    assert bool((bound[far] < op.float_error(params, [e[None]], mags, F32)[0][far]).all())


def _points(x: torch.Tensor, eps: float, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    pts = torch.cat([x[None], x + eps * (torch.rand(n, *x.shape, generator=gen) * 2 - 1)])
    pts = pts.float()
    out = (pts.double() - x.double()).abs() > eps
    return torch.where(out, x.float().expand_as(pts), pts)


FAMILY = residual_family(6)


@pytest.mark.parametrize("index", range(len(FAMILY)))
@pytest.mark.parametrize("at_centre", [True, False])
def test_residual_blocks_contain_float32_and_real_passes(index: int, at_centre: bool) -> None:
    name, model, x, eps = FAMILY[index]
    eps = 0.0 if at_centre else eps
    lo, hi = lipbound.output_bounds(model, x, eps, method="crown")
    pts = _points(x, eps, 200, index)
    with torch.no_grad():
        f32 = model(pts).double()
        f64 = copy.deepcopy(model).double()(pts.double())
    for f in (f32, f64):
        assert bool((f >= lo).all() and (f <= hi).all()), (name, float((f - hi).max()))


def _allowance(model, x: torch.Tensor, eps: float) -> torch.Tensor:
    x1 = x.unsqueeze(0).double()
    traced = get_traced(model, x1, torch.float64, x.device)
    domain = make_domain(x1, eps, math.inf)
    state = prepare_state(traced.graph, domain, "crown")
    return execution_error(traced.raw, domain.interval(), traced.precision, state.bounds.get)


def test_interval_rule_shrinks_the_residual_blocks_allowance(monkeypatch) -> None:
    with_intervals = [_allowance(m, x, eps) for _, m, x, eps in FAMILY]
    monkeypatch.setattr(LeakyReLU, "error_uses_intervals", False)
    lipschitz_rule = [_allowance(m, x, eps) for _, m, x, eps in FAMILY]
    for a, b in zip(with_intervals, lipschitz_rule):
        assert bool((a <= b).all())
        assert float(a.sum()) < float(b.sum())
