"""``torch.where`` / ``masked_fill`` on comparisons of input-dependent values, ``sign`` and
``heaviside`` (session 15).

For each model: the traced graph reproduces the model, ``output_bounds`` (ibp, crown,
alpha-crown) contain sampled outputs in float64 and in the model's float32 forward, and point
bounds contain the float32 forward even where the model's computed comparison differs from
the exact one (a threshold set to the model's own rounded value). Lipschitz and Jacobian
bounds are refused with the reason (the selection is a step), and so is any other use of a
comparison's result.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lipbound
from lipbound.errors import UnsupportedOperationError
from tests.api.sampled import assert_graph_reproduces, assert_outputs_inside, ball_points, x_of

D = 5


class _Where(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(3 + len(kind))
        self.kind = kind
        self.fc1, self.fc2, self.head = nn.Linear(D, 6), nn.Linear(D, 6), nn.Linear(6, 3)
        self.register_buffer("t", torch.randn(6) * 0.3)

    def forward(self, x):
        h, g, k = self.fc1(x), self.fc2(x), self.kind
        if k == "leaky":  # a hand-written leaky ReLU
            y = torch.where(h > 0, h, 0.1 * h)
        elif k == "max_ge":  # element-wise max of two activations, ties to h
            y = torch.where(h >= g, h, g)
        elif k == "fill_lt":
            y = h.masked_fill(h < self.t, -0.5)
        elif k == "not_le":  # ~(h <= g): h > g
            y = torch.where(~(h <= g), torch.tanh(h), 0.25)
        elif k == "constants":  # a step: 1 above the threshold, -1 below
            y = torch.where(self.t < g, 1.0, -1.0) + h
        elif k == "broadcast":  # a per-sample scalar against every feature
            y = torch.where(h > h.mean(1, keepdim=True), h, g)
        elif k == "step_float":  # the step as a float mask, times an activation
            y = h * (h > 0.1).float() + g
        elif k == "scalar_other":
            y = torch.where(g <= 0.2, h, 0.0)
        elif k == "sign":
            y = torch.sign(h) * g + h
        elif k == "heaviside":
            y = torch.heaviside(h, torch.full((), 0.5, dtype=h.dtype)) + torch.tanh(g)
        else:
            raise ValueError(k)
        return self.head(y)


KINDS = ("leaky", "max_ge", "fill_lt", "not_le", "constants", "broadcast", "step_float",
         "scalar_other", "sign", "heaviside")
MODELS = {k: _Where(k).eval() for k in KINDS}


@pytest.mark.parametrize("name", KINDS)
def test_traced_graph_reproduces_the_model(name):
    assert_graph_reproduces(MODELS[name], (D,), n=200, eps=0.5)


@pytest.mark.parametrize("name", KINDS)
def test_output_bounds_contain_samples(name):
    assert_outputs_inside(MODELS[name], x_of((D,)))


@pytest.mark.parametrize("name", KINDS)
def test_lipschitz_and_jacobian_are_refused_with_the_reason(name):
    for fn in (lipbound.local_lipschitz, lipbound.jacobian_bounds):
        with pytest.raises(UnsupportedOperationError, match="discontinuous"):
            fn(MODELS[name], x_of((D,)), 0.02)


class _OnTheEdge(nn.Module):
    """``where(h > t, h + 1, h - 1)`` with ``t`` the model's own float32 value of ``h`` at x0:
    the float32 forward there takes the ``h - 1`` branch; where the exact h exceeds t, the
    exact function takes ``h + 1``."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(D, 16)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(16, D, generator=g) * 0.37)
            self.fc.bias.copy_(torch.randn(16, generator=g) * 0.11)
        self.register_buffer("t", torch.zeros(16))

    def forward(self, x):
        h = self.fc(x)
        return torch.where(h > self.t, h + 1.0, h - 1.0)


def _edge_case() -> tuple[nn.Module, torch.Tensor]:
    """A model and point where some exact h lies strictly above the model's float32 h."""
    for seed in range(50):
        model = _OnTheEdge(seed).eval()
        x = torch.rand(D, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            h32 = model.fc(x[None])[0]
            h64 = copy.deepcopy(model.fc).double()(x[None].double())[0]
            model.t.copy_(h32)
        if bool((h64 > h32.double()).any()):
            return model, x
    raise AssertionError("no neuron rounds down in 50 seeds")


def test_point_bounds_contain_the_float32_forward_where_the_comparison_flips():
    model, x = _edge_case()
    lo, up = lipbound.output_bounds(model, x, 0.0)
    with torch.no_grad():
        y = model(x[None])[0].double()
    assert (y >= lo).all() and (y <= up).all(), (lo - y, y - up)


def test_other_uses_of_a_comparison_are_refused():
    class StepTimes(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(D, 3)

        def forward(self, x):
            h = self.fc(x)
            return h * ((h > 0) & (h < 1))

    with pytest.raises(UnsupportedOperationError, match="condition of torch.where"):
        lipbound.output_bounds(StepTimes().eval(), x_of((D,)), 0.02)


@pytest.mark.parametrize("name", ["leaky", "sign"])
def test_branch_and_bound_output_bounds_contain_samples(name):
    """bab's split scores read the Clarke Jacobian, which a step lacks: it falls back to the
    point gradient (input splits) and uniform neuron scores, and stays sound."""
    model, x = MODELS[name], x_of((D,))
    lo, up = lipbound.output_bounds(model, x, 0.05, method="bab", timeout=2, progress=False)
    pts = ball_points(x, 2000, 4, eps=0.05)
    with torch.no_grad():
        y = model(pts.float()).double()
    assert (y >= lo).all() and (y <= up).all()
