"""The zoo's factories: seeded, eval mode, the architecture facts their docstrings state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lipbound.errors import InputError
from lipbound.models import available
from lipbound.models.zoo import GELU_MAX_SLOPE, ZOO, ZOO_NAMES, zoo_input, zoo_model


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_models_are_seeded_eval_and_shaped(name):
    a, b = zoo_model(name, seed=3), zoo_model(name, seed=3)
    assert not a.training
    x = zoo_input(name).unsqueeze(0)
    assert x.shape[1:] == ZOO[name].input_shape
    with torch.no_grad():
        ya = a(x)
        assert ya.shape == (1, ZOO[name].num_outputs)
        assert torch.equal(ya, b(x))
        if name != "mnist1d-cnn":  # trained weights: the seed only moves the input
            assert not torch.equal(ya, zoo_model(name, seed=4)(x))


def test_unknown_zoo_name_is_refused():
    with pytest.raises(InputError, match="zoo models"):
        zoo_model("resnet50")
    with pytest.raises(InputError):
        zoo_input("resnet50")


def test_zoo_registers_no_shipped_model():
    assert not set(ZOO_NAMES) - {"mnist1d-cnn"} & set(available())


def test_resnet_batchnorm_statistics_are_not_trivial():
    bns = [m for m in zoo_model("resnet18").modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 1 + 16 + 3  # stem, two per block, three projection shortcuts
    for m in bns:
        assert m.running_mean.abs().max() > 0 and (m.running_var - 1).abs().max() > 0


def test_lipschitz_transformer_weights_have_spectral_norm_one():
    model = zoo_model("lipschitz-transformer", dtype=torch.float64)
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    for m in model.modules():
        if isinstance(m, nn.Linear):
            parts = m.weight.chunk(3) if m.out_features == 3 * m.in_features else (m.weight,)
            for w in parts:
                assert abs(torch.linalg.matrix_norm(w, ord=2).item() - 1) < 1e-6
    t = torch.linspace(-6, 6, 20001, dtype=torch.float64)
    slope = torch.diff(torch.nn.functional.gelu(t)) / torch.diff(t)
    assert slope.max() <= GELU_MAX_SLOPE * (1 + 1e-4)  # GELU / 1.1289 is 1-Lipschitz
