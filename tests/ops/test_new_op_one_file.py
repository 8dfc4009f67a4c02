"""Adding an op is one file in ``lipbound/ops/`` and one test case: proved on two new ops.

``tests/ops/new_op_module.py`` defines ``asinh`` (+ ``d_asinh``) and ``rrelu`` the way a
new op module would, registering the ops and the ATen calls they convert at import. With no
other edit to the library, and one row per op added to the soundness case table
(:data:`tests.ops.test_ops_soundness.CASES`), the table-driven checks pass for them (sampled
containment of IBP and relaxations, Jacobian rule against autograd, sampled containment of
the Jacobian bounds), and a model using them traces and gets sound output bounds (IBP, CROWN),
Jacobian bounds, local Lipschitz bounds and naive bounds. The registries are restored after
each test, so the rest of the suite (the registry-completeness test) sees the library only.
"""

from __future__ import annotations

import importlib
import math
import sys

import pytest
import torch
from torch import nn

import lipbound
from lipbound.graph.trace import trace
from lipbound.ops import registry, tracing
from tests.ops import test_op_jacobians as jac_cases
from tests.ops import test_ops_soundness as fwd_cases

pytestmark = pytest.mark.usefixtures("one_thread")

DT = torch.float64
NEW_KINDS = ("asinh", "d_asinh", "rrelu")


@pytest.fixture
def new_ops(monkeypatch):
    """Import the new op module (registering its ops and converters) and add its rows to the
    case table; afterwards the registries are as before."""
    ops_before, aten_before = dict(registry.REGISTRY), dict(tracing.ATEN)
    registry.load_all()
    sys.modules.pop("tests.ops.new_op_module", None)
    importlib.import_module("tests.ops.new_op_module")
    for kind in ("asinh", "d_asinh"):  # the one test case of each op
        monkeypatch.setitem(fwd_cases.CASES, kind, fwd_cases._unary())
    monkeypatch.setitem(fwd_cases.CASES, "rrelu",
                        lambda g: ({"slope": float(torch.rand(1, generator=g))}, [(3, 4)]))
    yield
    registry.REGISTRY.clear()
    registry.REGISTRY.update(ops_before)
    tracing.ATEN.clear()
    tracing.ATEN.update(aten_before)


class Net(nn.Module):
    """linear -> asinh -> linear -> rrelu (eval) -> linear (float64)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = nn.Linear(4, 6).double()
        self.b = nn.Linear(6, 5).double()
        self.c = nn.Linear(5, 2).double()
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g, dtype=DT)

    def forward(self, x):
        h = torch.asinh(self.a(x))
        h = nn.functional.rrelu(self.b(h), 0.1, 0.3, training=False)
        return self.c(h)


def test_the_new_ops_are_unknown_without_their_file():
    with pytest.raises(lipbound.UnsupportedOperationError) as info:
        lipbound.output_bounds(Net().eval(), torch.zeros(1, 4, dtype=DT), 0.1, method="ibp")
    assert info.value.op == "aten.asinh.default"
    assert not set(NEW_KINDS) & set(registry.kinds())


@pytest.mark.usefixtures("new_ops")
@pytest.mark.parametrize("kind", NEW_KINDS)
def test_the_case_table_checks_pass_for_the_new_ops(kind):
    for seed in range(6):
        fwd_cases.check_op_soundness(kind, seed, (0.05, 1.0, 4.0)[seed % 3])
    if kind != "d_asinh":  # derivatives are not differentiated again
        assert registry.get(kind).differentiable
        for seed in (0, 1):
            jac_cases.test_jacobian_rule_equals_autograd(kind, seed)
        for method in ("ibp", "crown"):
            jac_cases.test_jacobian_bounds_contain_sampled_gradients(kind, method)


def _ball(x, eps, n, g):
    return x + eps * (2 * torch.rand(n, x.shape[1], generator=g, dtype=DT) - 1)


@pytest.mark.usefixtures("new_ops")
def test_a_model_with_the_new_ops_traces_and_is_bounded_soundly():
    model = Net().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, generator=g, dtype=DT)
    eps = 0.15
    assert [n.op for n in trace(model, x).nodes][1:] == [
        "linear", "asinh", "linear", "rrelu", "linear"]
    pts = _ball(x, eps, 4000, g)
    with torch.no_grad():
        ys = model(pts)
    widths = {}
    for method in ("ibp", "crown", "alpha-crown"):
        ob = lipbound.output_bounds(model, x, eps, method=method)
        lo, up = ob.lower.reshape(1, -1), ob.upper.reshape(1, -1)
        assert (lo <= ys).all() and (ys <= up).all(), method
        widths[method] = float((ob.upper - ob.lower).sum())
    assert widths["crown"] < widths["ibp"]  # the relaxations are used, not only intervals

    # Clarke Jacobian: bounds contain autograd's Jacobian at sampled points (and at kinks)
    jb = lipbound.jacobian_bounds(model, x, eps, method="crown")
    jac = torch.stack([torch.autograd.functional.jacobian(model, p[None])[0, :, 0]
                       for p in pts[:300]])  # [P, 2, 4]
    assert jb.lower.shape == (2, 4)
    assert (jb.lower <= jac).all() and (jac <= jb.upper).all()

    # local Lipschitz (l_inf input norm: l_1 norms of gradient rows) above sampled values
    sampled = jac.abs().sum(-1).max()
    for method in ("naive", "crown"):
        lip = lipbound.local_lipschitz(model, x, eps, method=method, n_samples=64)
        assert lip.value >= float(sampled) * (1 - 1e-12), method
        assert math.isfinite(lip.value)
