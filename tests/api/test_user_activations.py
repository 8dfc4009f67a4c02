"""Small user models with the elementwise activations of issue 17's sweep, bounded end to end.

Each model is linear -> activation -> linear in float32, as a user writes it. For every one:
``output_bounds`` (IBP, CROWN, alpha-CROWN) contain the outputs at sampled points of the
l_inf ball (the model's own float32 forward pass and its float64 copy), and, for the
continuous ones, ``local_lipschitz`` (CROWN) is at least the l_1 norm of every sampled
gradient row and ``jacobian_bounds`` contain every sampled Jacobian (points include ones put
on the activation's kinks). The discontinuous ones (hardshrink, Threshold with value != threshold)
get output bounds, and a clear error naming the op from every Lipschitz / Jacobian method.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import lipbound
from lipbound.graph.trace import trace
from lipbound.jacobian.naive import naive_factors

pytestmark = pytest.mark.usefixtures("one_thread")

D, H, K = 5, 8, 3
EPS = 0.05


class Lambda(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _prelu_channels() -> nn.PReLU:
    m = nn.PReLU(H)
    m.weight.data = torch.tensor([-0.5, 0.0, 0.25, 1.0, 1.5, 3.0, -2.0, 0.7])
    return m


ACTIVATIONS = {
    "prelu": nn.PReLU,
    "prelu_channels": _prelu_channels,
    "prelu_above_one": lambda: nn.PReLU(init=2.5),
    "selu": nn.SELU,
    "celu": lambda: nn.CELU(0.7),
    "elu_alpha": lambda: nn.ELU(0.4),
    "mish": nn.Mish,
    "softplus_beta": lambda: nn.Softplus(beta=2.0, threshold=1.0),
    "logsigmoid": nn.LogSigmoid,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "sin_cos": lambda: Lambda(lambda h: torch.sin(3 * h) + torch.cos(h)),
    "atan": lambda: Lambda(torch.atan),
    "erf": lambda: Lambda(torch.erf),
    "log1p_expm1": lambda: Lambda(lambda h: torch.log1p(torch.sigmoid(h)) + torch.expm1(h / 4)),
    "softshrink": lambda: nn.Softshrink(0.3),
    "threshold_continuous": lambda: nn.Threshold(0.1, 0.1),
}
DISCONTINUOUS = {"hardshrink": lambda: nn.Hardshrink(0.3),
                 "threshold": lambda: nn.Threshold(0.1, -0.2)}


def _model(make, seed: int = 0, glu: bool = False):
    torch.manual_seed(seed)
    act = nn.GLU() if glu else make()
    model = nn.Sequential(nn.Linear(D, H), act, nn.Linear(H // 2 if glu else H, K)).eval()
    x = torch.rand(D)
    return model, x


def _models():
    out = {name: _model(make) for name, make in ACTIVATIONS.items()}
    out["glu"] = _model(None, glu=True)
    return out


MODELS = _models()


def _points(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, D, generator=g, dtype=torch.float64) * 2 - 1
    u = torch.where(torch.rand(n, D, generator=g, dtype=torch.float64) < 0.2, u.sign(), u)
    return x.double() + EPS * u


def _on_kinks(model: nn.Sequential, pts: torch.Tensor) -> torch.Tensor:
    """Points moved so that one pre-activation of the hidden layer sits exactly on 0 (the
    kink of PReLU, SELU, ELU(alpha))."""
    lin = copy.deepcopy(model[0]).double()
    out = []
    for i, p in enumerate(pts):
        j = i % H
        z = lin(p)[j]
        w = lin.weight[j]
        out.append(p - z * w / (w @ w))
    return torch.stack(out)


def _grads(model: nn.Module, pts: torch.Tensor) -> torch.Tensor:
    """Jacobians [P, K, D] of the float64 copy."""
    m = copy.deepcopy(model).double()
    return torch.stack([torch.autograd.functional.jacobian(m, p[None])[0, :, 0] for p in pts])


def _check_outputs(model, x, seed=0):
    pts = _points(x, 400, seed)
    with torch.no_grad():
        y32 = model(pts.float()).double()
        y64 = copy.deepcopy(model).double()(pts)
    widths = {}
    for method in ("ibp", "crown", "alpha-crown"):
        lo, up = lipbound.output_bounds(model, x, EPS, method=method, iterations=5)
        assert torch.isfinite(lo).all() and torch.isfinite(up).all(), method
        for y in (y64, y32):
            assert (y >= lo).all() and (y <= up).all(), method
        widths[method] = float((up - lo).sum())
    return widths


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_bounds_contain_sampled_outputs(name):
    model, x = MODELS[name]
    widths = _check_outputs(model, x)
    assert widths["crown"] <= widths["ibp"] * (1 + 1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_lipschitz_and_jacobian_bounds_contain_sampled_gradients(name):
    model, x = MODELS[name]
    pts = _points(x, 60, 1)
    if name.startswith(("prelu", "selu", "elu", "celu", "softshrink", "threshold")):
        pts = torch.cat([pts, _on_kinks(model, pts[:20])])
        pts = pts[((pts - x.double()).abs() <= EPS).all(1)]
    J = _grads(model, pts)
    r = lipbound.local_lipschitz(model, x, EPS, method="crown")
    assert (J.abs().sum(-1).max(0).values <= r.upper).all()
    lo, up = lipbound.jacobian_bounds(model, x, EPS)
    assert (J >= lo).all() and (J <= up).all()


@pytest.mark.parametrize("name", sorted(DISCONTINUOUS))
def test_discontinuous_activations_get_output_bounds_and_refuse_lipschitz(name):
    model, x = _model(DISCONTINUOUS[name])
    _check_outputs(model, x)
    graph = trace(model, x[None])
    calls = [lambda: lipbound.local_lipschitz(model, x, EPS, method="crown"),
             lambda: lipbound.local_lipschitz(model, x, EPS, method="naive"),
             lambda: lipbound.jacobian_bounds(model, x, EPS),
             lambda: naive_factors(graph, math.inf)]  # the naive product itself
    for call in calls:
        with pytest.raises(lipbound.UnsupportedOperationError) as info:
            call()
        assert info.value.op == name and "module '1'" in info.value.where
        assert "discontinuous" in str(info.value)
