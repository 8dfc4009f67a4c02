"""Bad input to the exact baselines raises lipbound's typed errors with useful messages;
time-outs return a sound bracket."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lipbound.errors import (
    InputError,
    ProblemTooLargeError,
    ShapeError,
    SpecError,
    UnsupportedModelError,
    UnsupportedNormError,
)
from lipbound.exact.domain import make_ball, vec_norm
from lipbound.exact.lipsdp import lipsdp_neuron
from lipbound.exact.milp import milp_local_lipschitz
from lipbound.norms import dual_norm
from tests.oracles import enumerate_local_lipschitz, random_mlp, random_sequential, sampled_lower

MLP_321 = random_mlp([3, 2, 1], 0)
X0 = torch.zeros(3)


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan")])
def test_timeout_must_be_positive(timeout):
    with pytest.raises(InputError, match="timeout"):
        milp_local_lipschitz(MLP_321, X0, 0.1, timeout=timeout)


def test_tanh_model_is_unsupported():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    for fn in (milp_local_lipschitz, enumerate_local_lipschitz):
        with pytest.raises(UnsupportedModelError, match="Tanh"):
            fn(net, X0, 0.1)
    with pytest.raises(UnsupportedModelError, match="Tanh"):
        lipsdp_neuron(net)


def test_too_many_binaries():
    mlp = random_mlp([10, 64, 64, 1], 0)
    with pytest.raises(ProblemTooLargeError, match=r"binaries.*max_binaries=5"):
        milp_local_lipschitz(mlp, torch.zeros(10), 0.5, max_binaries=5)
    with pytest.raises(ProblemTooLargeError, match="max_unstable"):
        enumerate_local_lipschitz(mlp, torch.zeros(10), 0.5)


@pytest.mark.parametrize("eps", [-0.1, float("nan"), float("inf"), "abc"])
def test_bad_eps(eps):
    for fn in (milp_local_lipschitz, enumerate_local_lipschitz):
        with pytest.raises(InputError, match="eps"):
            fn(MLP_321, X0, eps)


def test_wrong_shapes():
    for fn in (milp_local_lipschitz, enumerate_local_lipschitz):
        with pytest.raises(ShapeError, match="x0"):
            fn(MLP_321, torch.zeros(4), 0.1)
        with pytest.raises(SpecError):
            fn(MLP_321, X0, 0.1, math.inf, torch.ones(2))
        with pytest.raises(ShapeError, match="data_range"):
            fn(MLP_321, X0, 0.1, math.inf, None, data_range=(torch.zeros(2), torch.ones(2)))
        with pytest.raises(InputError):
            fn(MLP_321, X0, 0.1, math.inf, None, data_range=(1.0, 0.0))
        with pytest.raises(InputError, match="empty"):
            fn(MLP_321, X0, 0.1, math.inf, None, data_range=(0.5, 1.0))
        with pytest.raises(InputError):
            fn(MLP_321, torch.tensor([0.0, float("nan"), 0.0]), 0.1)
    with pytest.raises(SpecError):  # K = 2 needs a spec row
        milp_local_lipschitz(random_mlp([3, 2, 2], 0), X0, 0.1)
    with pytest.raises(ShapeError):
        milp_local_lipschitz(MLP_321, X0, 0.1, preact_bounds=[(torch.zeros(3), torch.ones(3))])
    with pytest.raises(ShapeError):
        milp_local_lipschitz(MLP_321, X0, 0.1, preact_bounds=[])
    with pytest.raises(InputError, match="l > u"):
        milp_local_lipschitz(MLP_321, X0, 0.1, preact_bounds=[(torch.ones(2), torch.zeros(2))])


def test_norms():
    with pytest.raises(UnsupportedNormError):
        milp_local_lipschitz(MLP_321, X0, 0.1, p=2)
    with pytest.raises(UnsupportedNormError):
        enumerate_local_lipschitz(MLP_321, X0, 0.1, p=3)
    r = milp_local_lipschitz(MLP_321, X0, 0.1, p="inf")
    assert r.norm == math.inf


def test_timeout_returns_sound_bracket():
    mlp = random_mlp([10, 32, 32, 1], 1)
    x0 = torch.from_numpy(np.random.default_rng(5).standard_normal(10))
    r = milp_local_lipschitz(mlp, x0, 0.5, math.inf, timeout=0.5)
    assert r.status == "timeout"
    assert r.value == r.upper
    assert r.lower < r.upper < math.inf
    assert r.upper <= r.details["interval_upper"] + 1e-12
    s = sampled_lower(mlp, x0, 0.5, math.inf, n=2000)
    assert r.upper >= s
    ball = make_ball(mlp, x0, 0.5, math.inf)
    assert ball.contains(r.witness.numpy())
    pattern = [np.array(v, dtype=bool) for v in r.pattern]
    assert mlp.pattern_violation(r.witness, pattern) <= 1e-7
    g = mlp.gradient(r.witness, pattern=pattern).numpy()
    assert vec_norm(g, dual_norm(math.inf)) == pytest.approx(r.lower, rel=1e-12)
    assert r.to_dict()["status"] == "timeout"


def test_sequential_with_flatten_accepted_everywhere():
    net = nn.Sequential(nn.Flatten(), *random_sequential([4, 3, 1], 0))
    x0 = torch.zeros(1, 2, 2)
    assert milp_local_lipschitz(net, x0, 0.1).witness.shape == (1, 2, 2)
    assert enumerate_local_lipschitz(net, x0, 0.1).witness.shape == (1, 2, 2)
    assert lipsdp_neuron(net).certified > 0
