"""The frozen MLP description used by the exact baselines."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from lipbound.errors import ShapeError, SpecError, UnsupportedModelError
from lipbound.exact.mlp import MLP
from tests.oracles import random_sequential


def test_from_sequential_reads_layers_and_matches_torch():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(6, 5), nn.ReLU(),
        nn.Sequential(nn.Linear(5, 4), nn.LeakyReLU(0.2)), nn.Identity(), nn.Linear(4, 3),
    ).eval()
    m = MLP.from_sequential(net)
    assert m.in_features == 6 and m.out_features == 3
    assert m.hidden_sizes == (5, 4)
    assert m.negative_slopes == (0.0, 0.2)
    x = torch.randn(7, 2, 3)
    ref = net.double()(x.double())
    assert torch.allclose(m.forward(x), ref, atol=1e-12)
    assert torch.allclose(m.forward(x[0].reshape(-1)), ref[0], atol=1e-12)


def test_consecutive_linear_layers_are_folded():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    m = MLP.from_sequential(net)
    assert m.hidden_sizes == (5,)
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(m.forward(x), net(x), atol=1e-12)


@pytest.mark.parametrize("layer", [nn.Tanh(), nn.Sigmoid(), nn.Conv1d(1, 1, 1), nn.Dropout()])
def test_unsupported_layer_is_named(layer):
    net = nn.Sequential(nn.Linear(2, 2), layer, nn.Linear(2, 1))
    with pytest.raises(UnsupportedModelError, match=type(layer).__name__):
        MLP.from_sequential(net)


def test_bad_structures_raise():
    with pytest.raises(UnsupportedModelError):
        MLP.from_sequential(nn.Linear(2, 2))  # not a Sequential
    with pytest.raises(UnsupportedModelError, match="last layer"):
        MLP.from_sequential(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    with pytest.raises(UnsupportedModelError):
        MLP.from_sequential(nn.Sequential(nn.ReLU(), nn.Linear(2, 1)))
    with pytest.raises(UnsupportedModelError):
        MLP.from_sequential(nn.Sequential(nn.Linear(2, 2), nn.LeakyReLU(-0.5), nn.Linear(2, 1)))
    with pytest.raises(ShapeError):
        MLP((np.ones((2, 3)), np.ones((1, 3))), (np.zeros(2), np.zeros(1)), (0.0,))


def test_frozen_and_read_only():
    m = MLP.from_sequential(random_sequential([3, 4, 1], 0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.weights = ()
    with pytest.raises(ValueError):
        m.weights[0][0, 0] = 1.0
    assert m.weights[0].dtype == np.float64


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_gradient_matches_autograd(slope):
    net = random_sequential([4, 6, 5, 3], 3, negative_slope=slope).double()
    m = MLP.from_sequential(net)
    torch.manual_seed(0)
    c = torch.randn(3, dtype=torch.float64)
    X = torch.randn(50, 4, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad((net(X) @ c).sum(), X)
    for i in range(50):
        assert torch.allclose(m.gradient(X[i].detach(), c), g[i], atol=1e-12)
    assert np.allclose(m.gradients_batch(X.detach().numpy(), c.numpy()), g.numpy(), atol=1e-12)


def test_gradient_with_explicit_pattern_and_violation():
    # f(x) = relu(x) + 2 relu(-x) at x = 0: every pattern is consistent (closed semantics)
    m = MLP((np.array([[1.0], [-1.0]]), np.array([[1.0, 2.0]])), (np.zeros(2), np.zeros(1)),
            (0.0,))
    x = torch.zeros(1)
    assert m.gradient(x, pattern=[np.array([True, True])]).item() == pytest.approx(-1.0)
    assert m.gradient(x, pattern=[np.array([False, True])]).item() == pytest.approx(-2.0)
    assert m.pattern_violation(x, [np.array([True, True])]) == 0.0
    assert m.pattern_violation(torch.tensor([0.5]), [np.array([True, True])]) == 0.5
    with pytest.raises(ShapeError):
        m.gradient(x, pattern=[np.array([True])])


def test_spec_and_shape_errors():
    m = MLP.from_sequential(random_sequential([3, 4, 2], 0))
    with pytest.raises(SpecError):
        m.spec_row(None)
    with pytest.raises(SpecError):
        m.spec_row(torch.ones(3))
    with pytest.raises(ShapeError):
        m.gradient(torch.ones(4), torch.ones(2))
    with pytest.raises(ShapeError):
        m.forward(torch.ones(2, 5))


def test_to_sequential_roundtrip():
    m = MLP.from_sequential(random_sequential([3, 4, 4, 2], 5, negative_slope=0.3))
    m2 = MLP.from_sequential(m.to_sequential())
    for a, b in zip(m.weights + m.biases, m2.weights + m2.biases):
        assert np.array_equal(a, b)
    assert m2.negative_slopes == m.negative_slopes


def test_from_sequential_keeps_a_shared_activation_instance_twice():
    import torch.nn as nn

    from lipbound.exact.mlp import MLP

    relu = nn.ReLU()
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 6), relu, nn.Linear(6, 5), relu,
                          nn.Linear(5, 2)).eval()
    assert [tuple(w.shape) for w in MLP.from_sequential(model).weights] == [(6, 3), (5, 6), (2, 5)]
