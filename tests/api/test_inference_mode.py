"""Every public entry point gives the same answer under ``torch.inference_mode`` and
``torch.no_grad`` as under the default grad mode, and a call made under inference mode leaves
nothing in lipbound's caches that breaks later calls (:mod:`lipbound.gradmode`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lipbound
from lipbound import audit
from lipbound.smoothing import Smooth


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(),
                         nn.Linear(8, 3)).eval()


CALLS = {
    "output_bounds": lambda m, x: tuple(lipbound.output_bounds(m, x, 0.1)),
    "output_bounds alpha": lambda m, x: tuple(
        lipbound.output_bounds(m, x, 0.1, method="alpha-crown", iterations=3)),
    "output_bounds_batch": lambda m, x: tuple(
        lipbound.api.output_bounds_batch(m, torch.stack([x, x + 0.1]), 0.05)),
    "jacobian_bounds": lambda m, x: tuple(lipbound.jacobian_bounds(m, x, 0.1)),
    "local_lipschitz": lambda m, x: (lipbound.local_lipschitz(m, x, 0.1).upper,),
    "local_lipschitz bab": lambda m, x: (
        lipbound.local_lipschitz(m, x, 0.1, method="bab", timeout=1.0).upper,),
    "global_lipschitz": lambda m, x: (torch.as_tensor(
        lipbound.global_lipschitz(m, x, method="naive").upper),),
}


def _same(a, b) -> None:
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(torch.as_tensor(u), torch.as_tensor(v), rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad"])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_grad_modes_give_the_same_bounds(name: str, mode: str) -> None:
    model, x = _mlp(), torch.rand(4)
    reference = CALLS[name](model, x)
    fresh = _mlp()  # a new model object: nothing cached for it yet
    with getattr(torch, mode)():
        x_mode = x.clone()  # an inference tensor under inference_mode
        got = CALLS[name](fresh, x_mode)
    _same(got, reference)
    _same(CALLS[name](fresh, x), reference)  # the caches left behind still work


def test_model_built_under_inference_mode() -> None:
    with torch.inference_mode():
        model, x = _mlp(), torch.rand(4)
    reference = lipbound.output_bounds(_mlp(), x.clone(), 0.1)
    got = lipbound.output_bounds(model, x, 0.1)
    _same(tuple(got), tuple(reference))


def test_smoothing_and_audit_under_inference_mode() -> None:
    model = _mlp(1)
    x = torch.rand(4)
    smooth = Smooth(model, num_classes=3, sigma=0.25)
    reference = smooth.certify(x, n0=50, n=500, certificate="cohen", seed=3)
    with torch.inference_mode():
        got = smooth.certify(x.clone(), n0=50, n=500, certificate="cohen", seed=3)
        report = audit.monotonicity(model, -torch.ones(4), torch.ones(4), features=[0],
                                    timeout=2.0, progress=False)
    assert (got.prediction, got.radius) == (reference.prediction, reference.radius)
    assert len(report.features) == 1


@pytest.mark.parametrize("name", ["output_bounds", "local_lipschitz", "jacobian_bounds"])
def test_float64_inference_tensor_input(name: str) -> None:
    """An input already in the compute dtype is not copied by a dtype cast: it must be
    cloned out of inference mode before autograd sees it."""
    model = _mlp().double()
    x = torch.rand(4, dtype=torch.float64)
    reference = CALLS[name](model, x)
    with torch.inference_mode():
        got = CALLS[name](model, x.clone())
    _same(got, reference)
