"""Weight audit against numpy's SVD and the dense matrix of a convolution."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lipbound import audit


def test_linear_stats_match_numpy_svd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    with torch.no_grad():
        model[2].weight[0, :2] = 0.0
    stats = audit.weights(model)
    assert [s.kind for s in stats] == ["Linear", "Linear"]
    for s, lin in zip(stats, (model[0], model[2])):
        sv = np.linalg.svd(lin.weight.detach().double().numpy(), compute_uv=False)
        assert math.isclose(s.spectral_norm, sv.max(), rel_tol=1e-12)
        assert math.isclose(s.condition_number, sv.max() / sv.min(), rel_tol=1e-9)
        assert s.shape == tuple(lin.weight.shape)
    assert stats[1].sparsity == 2 / 12 and stats[0].sparsity == 0.0


def test_rank_deficient_layer_has_infinite_condition_number():
    lin = nn.Linear(3, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1., 2, 3], [2, 4, 6], [0, 0, 1]]))
    (s,) = audit.weights(nn.Sequential(lin).eval())
    assert s.condition_number > 1e12


def _dense_conv_norm(conv: nn.Conv2d, in_shape) -> float:
    n = math.prod(in_shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    M = torch.nn.functional.conv2d(eye, conv.weight.detach().double(), None,
                                   stride=conv.stride, padding=conv.padding).reshape(n, -1)
    return float(np.linalg.svd(M.numpy(), compute_uv=False).max())


def test_conv_operator_norm_is_exact_and_below_the_size_free_bound():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 2)).eval()
    stats = audit.weights(model, input_shape=(2, 6, 6))
    assert [s.kind for s in stats] == ["Conv2d", "Conv2d", "Linear"]
    for s, conv, shape in ((stats[0], model[0], (2, 6, 6)), (stats[1], model[2], (3, 6, 6))):
        exact = _dense_conv_norm(conv, shape)
        assert math.isclose(s.spectral_norm, exact, rel_tol=1e-9)
        assert exact <= s.details["spectral_norm_upper"]
    free = audit.weights(model)  # no input shape: the certified size-free upper bound
    assert free[0].spectral_norm == stats[0].details["spectral_norm_upper"]


def test_conv_power_iteration_on_large_input_is_close_from_below():
    from lipbound.audit.weights import conv_operator_norm

    torch.manual_seed(2)
    conv = nn.Conv2d(1, 2, 3, padding=1)
    est = conv_operator_norm(conv, (1, 70, 70))  # 4900 inputs: power iteration
    # for a large input the norm approaches the circular-convolution (Fourier) norm from below
    W = conv.weight.detach().double()[:, 0]
    F = torch.fft.fft2(W, s=(256, 256))  # fine grid of the symbol (its sup bounds the norm)
    fourier = float(F.abs().pow(2).sum(0).sqrt().max())
    assert 0.97 * fourier <= est <= fourier * 1.001
