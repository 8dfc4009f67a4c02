"""The z-coupled ReLU-switch relaxation and the intermediate-bound row selection."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipbound.bounds.interval import Interval
from lipbound.ops import registry

DT = torch.float64


def _switch_values(z: torch.Tensor, a: torch.Tensor, h: torch.Tensor, k: float) -> torch.Tensor:
    """delta(z) a with delta = 1 (z > 0), k (z < 0) and any h-mix of {k, 1} at z = 0 (Clarke)."""
    at_zero = k + (1 - k) * h
    d = torch.where(z > 0, torch.ones_like(z), torch.where(z < 0, torch.full_like(z, k), at_zero))
    return d * a


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["relu_switch", "leaky_switch"]))
def test_switch_planes_sound_for_any_parameters(seed, kind):
    g = torch.Generator().manual_seed(seed)
    n, m = 200, 6
    k = 0.0 if kind == "relu_switch" else 0.1
    params = {} if kind == "relu_switch" else {"negative_slope": k}
    zc, ac = torch.randn(m, generator=g, dtype=DT), torch.randn(m, generator=g, dtype=DT)
    zr, ar = torch.rand(m, generator=g, dtype=DT) * 2, torch.rand(m, generator=g, dtype=DT) * 2
    z_iv, a_iv = Interval(zc - zr, zc + zr), Interval(ac - ar, ac + ar)
    op = registry.get(kind)
    opt = {key: torch.rand(m, generator=g, dtype=DT) for key in ("lam", "mu", "t_up", "t_lo")}
    rel = op.relax(params, z_iv, a_iv, opt=opt)
    u = torch.rand(n, m, generator=g, dtype=DT)
    z = z_iv.lower + u * (z_iv.upper - z_iv.lower)
    has_zero = (z_iv.lower <= 0) & (z_iv.upper >= 0)
    z[: n // 4] = torch.where(has_zero, 0.0, z[: n // 4])  # z = 0: the whole Clarke set
    a = a_iv.lower + torch.rand(n, m, generator=g, dtype=DT) * (a_iv.upper - a_iv.lower)
    h = torch.rand(n, m, generator=g, dtype=DT)
    s = _switch_values(z, a, h, k)
    lo = rel.lower_bias + rel.lower_slopes[0] * z + rel.lower_slopes[1] * a
    up = rel.upper_bias + rel.upper_slopes[0] * z + rel.upper_slopes[1] * a
    tol = 1e-9 * (1 + s.abs())
    assert (s >= lo - tol).all() and (s <= up + tol).all()


def test_switch_default_is_the_a_only_hull_and_init_opt_reproduces_it():
    op = registry.get("relu_switch")
    z = Interval(torch.tensor([-1.0, -1.0, -1.0, 0.5], dtype=DT),
                 torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=DT))
    a = Interval(torch.tensor([-1.0, 0.5, -3.0, -1.0], dtype=DT),
                 torch.tensor([3.0, 2.0, -1.0, 1.0], dtype=DT))
    rel = op.relax({}, z, a)
    assert rel.upper_slopes[0] is None and rel.lower_slopes[0] is None
    # mixed a: u_a (a - l_a) / (u_a - l_a) above, l_a (u_a - a) / (u_a - l_a) below
    assert rel.upper_slopes[1][0] == pytest.approx(0.75)
    assert rel.upper_bias[0] == pytest.approx(0.75)
    assert rel.lower_slopes[1][0] == pytest.approx(0.25)
    assert rel.lower_bias[0] == pytest.approx(-0.75)
    # a >= 0: 0 <= s <= a; a <= 0: a <= s <= 0; z stable active: s = a
    assert rel.upper_slopes[1][1] == 1 and rel.lower_slopes[1][1] == 0
    assert rel.upper_slopes[1][2] == 0 and rel.lower_slopes[1][2] == 1
    assert rel.upper_slopes[1][3] == 1 and rel.lower_slopes[1][3] == 1
    init = op.init_opt({}, z, a)
    rel2 = op.relax({}, z, a, opt=init)
    for x in torch.linspace(-1, 2, 7, dtype=DT):
        for b in torch.linspace(-3, 3, 7, dtype=DT):
            zz, aa = torch.full((4,), float(x), dtype=DT), torch.full((4,), float(b), dtype=DT)
            v1 = rel.upper_bias + rel.upper_slopes[1] * aa
            v2 = rel2.upper_bias + rel2.upper_slopes[0] * zz + rel2.upper_slopes[1] * aa
            assert torch.allclose(v1, v2)


def test_row_selection_does_not_change_bounds(monkeypatch):
    """Skipping rows that cannot change a relaxation gives exactly the same certified values."""
    import lipbound
    from lipbound.ops.base import NonlinearOp

    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.ReLU(), torch.nn.Linear(12, 12),
                                torch.nn.ReLU(), torch.nn.Linear(12, 3)).eval()
    x = torch.randn(4)
    a = lipbound.local_lipschitz(model, x, 0.3, method="crown", n_samples=1).upper
    jl, ju = lipbound.jacobian_bounds(model, x, 0.3, method="crown")
    for cls in {type(registry.get(k)) for k in registry.kinds()}:
        if issubclass(cls, NonlinearOp) and "tighten_mask" in cls.__dict__:
            monkeypatch.setattr(cls, "tighten_mask", lambda self, *args: None)
    b = lipbound.local_lipschitz(model, x, 0.3, method="crown", n_samples=1).upper
    kl, ku = lipbound.jacobian_bounds(model, x, 0.3, method="crown")
    assert torch.allclose(a, b, rtol=1e-9)
    assert torch.allclose(jl, kl, rtol=1e-9) and torch.allclose(ju, ku, rtol=1e-9)
