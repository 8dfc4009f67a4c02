"""Output bounds: sampled soundness over models and domains, exact cases, orderings, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lipbound
from lipbound.bounds.domains import Box, make_domain
from lipbound.errors import (
    InputError,
    ModelModeError,
    ShapeError,
    SpecError,
    UnknownMethodError,
    UnsupportedNormError,
    UnsupportedOperationError,
)
from lipbound.inputs import get_graph
from lipbound.propagate import bound_graph_spec, prepare_state
from tests.models import mlp, small_cnn

ACTS = {"relu": nn.ReLU, "leaky": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "silu": nn.SiLU, "softplus": nn.Softplus,
        "elu": nn.ELU}


def _assert_sound(model, x, eps, norm, lo, up, data_range=None, n=2000, seed=0):
    """Sampled points of the ball around x1 = [1, *in] map inside [lo, up]."""
    dom = make_domain(x.double(), eps, norm, data_range)
    pts = dom.sample(n, torch.Generator().manual_seed(seed))[:, 0]
    with torch.no_grad():
        y = model.double()(pts)
    model.float()
    tol = 1e-6 * (1 + y.abs())
    assert (y >= lo - tol).all() and (y <= up + tol).all()


@settings(max_examples=10, deadline=None)
@given(act=st.sampled_from(sorted(ACTS)), norm=st.sampled_from([math.inf, 2, 1]),
       method=st.sampled_from(["ibp", "crown", "alpha-crown"]), seed=st.integers(0, 10**6),
       clip=st.booleans())
def test_mlp_bounds_contain_samples(act, norm, method, seed, clip):
    model = mlp((5, 7, 6, 3), ACTS[act], seed=seed % 1000)
    x = torch.rand(5, generator=torch.Generator().manual_seed(seed))
    rng = (0.0, 1.0) if clip else None
    lo, up = lipbound.output_bounds(model, x, 0.3, norm=norm, method=method, data_range=rng,
                                    iterations=5)
    assert (lo <= up).all()
    _assert_sound(model, x.unsqueeze(0), 0.3, norm, lo, up, rng, seed=seed)


@pytest.mark.parametrize("act", [F.relu, torch.tanh, F.gelu])
@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
def test_cnn_bounds_contain_samples(act, method):
    model = small_cnn(act)
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    lo, up = lipbound.output_bounds(model, x, 0.05, method=method, iterations=5)
    _assert_sound(model, x, 0.05, math.inf, lo, up)


def test_box_domain_and_spec_rows_are_sound():
    model = mlp((3, 6, 2), nn.ReLU, seed=3)
    x1 = torch.zeros(1, 3, dtype=torch.float64)
    graph = get_graph(model, x1, torch.float64, torch.device("cpu"))
    lo_in = torch.tensor([[-1.0, 0.0, 0.5]], dtype=torch.float64)
    hi_in = torch.tensor([[0.0, 2.0, 0.7]], dtype=torch.float64)
    box = Box(lo_in, hi_in)
    C = torch.tensor([[[1.0, -1.0], [0.5, 2.0]]], dtype=torch.float64)
    state = prepare_state(graph, box, "crown")
    lo, up = bound_graph_spec(state, graph.output, C, "crown")
    pts = box.sample(3000, torch.Generator().manual_seed(0))[:, 0]
    y = model.double()(pts) @ C[0].t()
    assert (y >= lo - 1e-9).all() and (y <= up + 1e-9).all()


def test_hand_computed_relu_example():
    """f(x) = relu(x1 + x2) - relu(x1 - x2) on the box [-1, 1]^2 (l_inf ball of radius 1).

    The model runs in float64, so the allowance for its forward pass's rounding is ~1e-15;
    in float32 the bounds widen by that pass's worst-case error (a few 1e-7 per layer).
    """
    model32 = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)).eval()
    with torch.no_grad():
        model32[0].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        model32[0].bias.zero_()
        model32[2].weight.copy_(torch.tensor([[1.0, -1.0]]))
        model32[2].bias.zero_()
    lo32, up32 = lipbound.output_bounds(model32, torch.zeros(2), 1.0, method="ibp")
    assert -2.0 - 1e-5 < float(lo32) < -2.0 < 2.0 < float(up32) < 2.0 + 1e-5
    model = model32.double()
    lo, up = lipbound.output_bounds(model, torch.zeros(2), 1.0, method="ibp")
    assert float(lo) == pytest.approx(-2.0, abs=1e-8) and float(up) == pytest.approx(2.0, abs=1e-8)
    # CROWN: each hidden unit in [-2, 2], relaxation 0.5 z + 1 above; alpha = 1 below
    lo_c, up_c = lipbound.output_bounds(model, torch.zeros(2), 1.0, method="crown")
    # upper: 0.5(x1+x2)+1 - (x1-x2) = -0.5 x1 + 1.5 x2 + 1 -> max 3 ; IBP gives 2 (kept)
    assert float(up_c) == pytest.approx(2.0, abs=1e-8)
    # the true range is [-2, 2]: attained at (1, 1) -> 2 and (1, -1) -> -2
    assert float(lo_c) == pytest.approx(-2.0, abs=1e-8)


def test_eps_zero_gives_the_point_value():
    """In float64 the bounds at eps = 0 are the point value; for the float32 model they
    contain both its forward pass and the real function, within its rounding allowance."""
    model = small_cnn(torch.tanh)
    x = torch.rand(1, 1, 4, 4)
    for method in ["ibp", "crown"]:
        lo32, up32 = lipbound.output_bounds(model, x, 0.0, method=method)
        with torch.no_grad():
            y32 = model(x)[0].double()
            model64 = copy.deepcopy(model).double()
            y = model64(x.double())[0]
        assert bool((lo32 <= torch.minimum(y, y32)).all() and (torch.maximum(y, y32) <= up32).all())
        assert float((up32 - lo32).max()) < 1e-4  # worst-case float32 error of 5 layers
        lo, up = lipbound.output_bounds(model64, x.double(), 0.0, method=method)
        assert torch.allclose(lo, y, atol=1e-8) and torch.allclose(up, y, atol=1e-8)


@pytest.mark.parametrize("seed", range(4))
def test_orderings_on_relu_mlps(seed):
    model = mlp((6, 16, 16, 4), nn.ReLU, seed=seed)
    x = torch.rand(6, generator=torch.Generator().manual_seed(seed))
    ibp = lipbound.output_bounds(model, x, 0.1, method="ibp")
    crown = lipbound.output_bounds(model, x, 0.1, method="crown")
    alpha = lipbound.output_bounds(model, x, 0.1, method="alpha-crown", iterations=20)
    assert (crown.upper <= ibp.upper + 1e-9).all() and (crown.lower >= ibp.lower - 1e-9).all()
    assert (alpha.upper <= crown.upper + 1e-9).all()
    assert (alpha.lower >= crown.lower - 1e-9).all()
    # on these nets CROWN is strictly tighter than IBP on average
    assert (crown.upper - crown.lower).mean() < (ibp.upper - ibp.lower).mean()


def test_unsupported_operator_is_named_with_location():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return torch.sinh(self.lin(x))

    with pytest.raises(UnsupportedOperationError) as err:
        lipbound.output_bounds(Bad().eval(), torch.zeros(3), 0.1)
    msg = str(err.value)
    assert "aten.sinh" in msg and "Supported operators" in msg and "forward" in msg


def test_bad_inputs_raise_lipbound_errors():
    model = mlp((4, 5, 2))
    x = torch.zeros(4)
    with pytest.raises(ModelModeError):
        lipbound.output_bounds(mlp((4, 5, 2)).train(), x, 0.1)
    with pytest.raises(ShapeError):
        lipbound.output_bounds(model, torch.zeros(5), 0.1)
    with pytest.raises(InputError):
        lipbound.output_bounds(model, torch.tensor([0.0, float("nan"), 0.0, 0.0]), 0.1)
    with pytest.raises(InputError):
        lipbound.output_bounds(model, torch.tensor([0.0, float("inf"), 0.0, 0.0]), 0.1)
    with pytest.raises(InputError):
        lipbound.output_bounds(model, x, -0.1)
    with pytest.raises(SpecError):
        lipbound.output_bounds(model, x, 0.1, spec=torch.ones(2, 3))
    with pytest.raises(UnsupportedNormError):
        lipbound.output_bounds(model, x, 0.1, norm=3)
    with pytest.raises(UnknownMethodError):
        lipbound.output_bounds(model, x, 0.1, method="deeppoly")
    with pytest.raises(InputError):
        lipbound.output_bounds(model, x + 2, 0.1, data_range=(0, 1))
    with pytest.raises(ShapeError):
        lipbound.output_bounds(nn.Sequential(nn.Linear(4, 3), nn.Flatten(0)).eval(), x, 0.1)
