"""Models that write to tensors in place, bound as the functions they compute.

``torch.export`` keeps in-place calls in its graph, and a view taken before one (``v = h[:, :2];
h.relu_()``) reads the old node there while the model's view sees the new values: read call by
call, that graph was another function, and lipbound certified bounds that excluded the model's
own output (session 15). Exported programs with in-place calls are now functionalised, the
recorder takes an in-place call only on a tensor nothing else views, and in-place calls
(``mul_``, ``add_``, ``silu_``, ``clamp_``, ...) convert as their functional forms. For each
model: the traced graph reproduces the model, point bounds contain the model's float32
forward, and the three bound calls contain sampled outputs, gradients and Jacobians (autograd
through a functionalised copy where the model's own backward fails).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lipbound
from tests.api.sampled import assert_graph_reproduces, model_tests

D = 5


class _InPlace(nn.Module):
    """Two Linear layers around an in-place body ``kind``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(len(kind))
        self.kind = kind
        self.fc1, self.fc2, self.head = nn.Linear(D, 6), nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.fc1(x)
        k = self.kind
        if k == "view_then_relu_":  # the view sees the ReLU
            v = h.view(h.shape[0], 6)
            h.relu_()
            return self.head(v)
        if k == "slice_then_mul_":
            v = h[:, :3]
            h.mul_(-2.0)
            return self.head(torch.cat([v, torch.tanh(h[:, 3:])], 1))
        if k == "chain":  # relu_, then mul_ / add_ on its output (autograd cannot go back)
            return self.head(h.relu_().mul_(2.0).add_(0.5))
        if k == "residual_iadd":  # torchvision's BasicBlock: out += identity
            out = self.fc2(torch.relu(h))
            out += h
            return self.head(F.relu(out, inplace=True))
        if k == "slice_assign":
            h = self.fc2(torch.relu(h))
            h[:, :2] *= 0.5
            h[:, 4] = torch.tanh(h[:, 3])
            return self.head(h)
        if k == "activations_":
            h = F.silu(h, inplace=True)
            h = torch.sigmoid_(self.fc2(h)).clamp_(0.2, 0.8)
            return self.head(F.hardtanh(torch.tanh_(h), -0.5, 0.5, inplace=True))
        raise ValueError(k)


KINDS = ("view_then_relu_", "slice_then_mul_", "chain", "residual_iadd", "slice_assign",
         "activations_")
MODELS = {k: (_InPlace(k).eval(), (D,)) for k in KINDS}

test_output_bounds_contain_samples, test_lipschitz_and_jacobian_bounds_contain_sampled_gradients = (
    model_tests(MODELS, set()))


@pytest.mark.parametrize("name", KINDS)
def test_traced_graph_reproduces_the_model(name):
    assert_graph_reproduces(*MODELS[name])


@pytest.mark.parametrize("name", KINDS)
def test_point_bounds_contain_the_models_own_float32_forward(name):
    model, shape = MODELS[name]
    for seed in range(3):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        lo, up = lipbound.output_bounds(model, x, 0.0)
        with torch.no_grad():
            y = model(x[None].clone())[0].double()
        assert (y >= lo).all() and (y <= up).all(), (lo - y, y - up)
