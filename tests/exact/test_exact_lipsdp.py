"""LipSDP-Neuron: certified global l2 Lipschitz bounds."""

import math

import numpy as np
import pytest
import torch

from lipbound.exact.lipsdp import certify_multipliers, lipsdp_neuron
from lipbound.exact.mlp import MLP
from tests.oracles import random_mlp


def sampled_global(mlp: MLP, c=None, n=4000, seed=0, scale=3.0):
    """Largest l2 gradient norm (or Jacobian spectral norm) and finite-difference ratio seen."""
    net = mlp.to_sequential()
    g = torch.Generator().manual_seed(seed)
    X = scale * torch.randn(n, mlp.in_features, generator=g, dtype=torch.float64)
    X.requires_grad_(True)
    best = 0.0
    if c is not None:
        (grad,) = torch.autograd.grad((net(X) @ torch.as_tensor(c, dtype=torch.float64)).sum(), X)
        best = float(grad.norm(dim=1).max())
    else:
        for i in range(0, n, 200):
            with torch.no_grad():
                J = torch.func.vmap(torch.func.jacrev(net))(X[i:i + 200].detach())
            best = max(best, float(torch.linalg.matrix_norm(J, ord=2).max()))
    with torch.no_grad():
        Y = X + 0.05 * torch.randn(X.shape, generator=g, dtype=torch.float64)
        fx, fy = net(X), net(Y)
        if c is not None:
            cc = torch.as_tensor(c, dtype=torch.float64)
            fx, fy = fx @ cc, fy @ cc
            diff = (fx - fy).abs()
        else:
            diff = (fx - fy).norm(dim=1)
        best = max(best, float((diff / (X - Y).norm(dim=1)).max()))
    return best


def test_linear_model_is_spectral_norm():
    w = np.array([[3.0, 0.0], [4.0, 1.0]])
    r = lipsdp_neuron(MLP((w,), (np.zeros(2),), ()))
    assert r.certified == pytest.approx(np.linalg.norm(w, 2), rel=1e-9)


@pytest.mark.parametrize(
    "mlp, expected",
    [
        # f = relu(x1) + relu(x2): gradient (1, 1) everywhere on the positive quadrant
        (MLP((np.eye(2), np.array([[1.0, 1.0]])), (np.zeros(2), np.zeros(1)), (0.0,)),
         math.sqrt(2)),
        # f = 2 relu(3 x)
        (MLP((np.array([[3.0]]), np.array([[2.0]])), (np.zeros(1), np.zeros(1)), (0.0,)), 6.0),
        # f = 2 leaky(3 x) with slope 0.5: slopes in [0.5, 1]
        (MLP((np.array([[3.0]]), np.array([[2.0]])), (np.zeros(1), np.zeros(1)), (0.5,)), 6.0),
    ],
)
def test_hand_cases_tight(mlp, expected):
    r = lipsdp_neuron(mlp)
    assert r.certified >= expected * (1 - 1e-12)
    assert r.certified == pytest.approx(expected, rel=1e-4)
    assert r.naive >= expected * (1 - 1e-12)
    assert r.value == min(r.certified, r.naive)


@pytest.mark.parametrize("sizes, slope, spec", [
    ([3, 8, 2], 0.0, False),
    ([4, 10, 10, 3], 0.0, False),
    ([4, 10, 10, 3], 0.0, True),
    ([5, 12, 8, 1], 0.2, False),
    ([3, 6, 6, 6, 2], 0.1, True),
])
def test_random_nets_sound_and_below_naive(sizes, slope, spec):
    mlp = random_mlp(sizes, seed=sum(sizes), negative_slope=slope, weight_std=0.7)
    c = np.random.default_rng(0).standard_normal(sizes[-1]) if spec else None
    r = lipsdp_neuron(mlp, c)
    assert r.status.startswith("optimal")
    s = sampled_global(mlp, c)
    assert r.certified >= s * (1 - 1e-9)
    assert r.certified <= r.naive * (1 + 1e-6)
    # certification costs almost nothing over the SDP's own (uncertified) value
    assert r.certified == pytest.approx(r.sdp_value, rel=1e-3)
    assert r.to_dict()["method"] == "lipsdp-neuron"


def test_certification_is_sound_for_arbitrary_multipliers():
    """Whatever multipliers we pass, the certified value must still bound the true constant."""
    mlp = random_mlp([3, 7, 5, 2], 3, weight_std=0.8)
    s = sampled_global(mlp)
    rng = np.random.default_rng(1)
    ws = list(mlp.weights)
    N = sum(mlp.hidden_sizes)
    for t in (np.zeros(N), rng.uniform(0, 1, N), rng.uniform(0, 100, N), -rng.uniform(0, 1, N)):
        rho, _ = certify_multipliers(ws, mlp.negative_slopes, t)
        assert math.sqrt(rho) >= s * (1 - 1e-9)
    # and the SDP's multipliers, perturbed, still certify something sound
    r = lipsdp_neuron(mlp)
    for noise in (1e-3, 1e-1):
        tn = np.concatenate(r.multipliers) * (1 + noise * rng.standard_normal(N))
        rho, _ = certify_multipliers(ws, mlp.negative_slopes, tn)
        assert math.sqrt(rho) >= s * (1 - 1e-9)
