"""verify's last stage, uniform sampling of low-dimensional boxes (verify/sampling.py).

The network puts its only counterexamples in a thin diamond |x0 - a| + |x1 - b| <= 0.005 of
the box [-1, 1]^2 (1.25e-5 of its area), on a plateau: the violation's gradient is zero
outside the diamond of radius 0.01, so PGD cannot walk into it and only a point that lands in
it finds it.
"""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from lipbound.io.vnnlib import Conjunction, InputRegion
from lipbound.io.vnnlib_property import VnnlibProperty
from lipbound.verify import core, verify
from lipbound.verify.falsify import Checker
from lipbound.verify.sampling import sample_box, screening_model

A, B = 0.37, -0.61


def bump_net() -> nn.Module:
    """y = 1 - 200 relu(0.01 - |x0 - A| - |x1 - B|): y <= 0 iff |x0 - A| + |x1 - B| <= 0.005."""
    first = nn.Linear(2, 4)
    first.weight.data = torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    first.bias.data = torch.tensor([-A, A, -B, B])
    second = nn.Linear(4, 1)
    second.weight.data = -torch.ones(1, 4)
    second.bias.data = torch.tensor([0.01])
    out = nn.Linear(1, 1)
    out.weight.data = torch.tensor([[-200.0]])
    out.bias.data = torch.tensor([1.0])
    return nn.Sequential(first, nn.ReLU(), second, nn.ReLU(), out).eval()


def region(lo: float = -1.0, up: float = 1.0) -> InputRegion:
    unsafe = Conjunction(torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    return InputRegion(torch.full((2,), lo, dtype=torch.float64),
                       torch.full((2,), up, dtype=torch.float64), (unsafe,))


def in_diamond(x: torch.Tensor) -> bool:
    return float((x[0] - A).abs() + (x[1] - B).abs()) <= 0.005 + 1e-6


def test_sampling_finds_the_sliver_and_the_point_is_real():
    net, reg = bump_net(), region()
    found = sample_box(net, reg, (2,), Checker(net, (2,)), 20.0, torch.Generator().manual_seed(1))
    assert found is not None
    x, y = found
    assert reg.contains(x) and reg.is_counterexample(x, y) and in_diamond(x)


def test_sampling_never_reports_a_safe_region_and_keeps_its_time():
    """The box [-1, 0.3]^2 misses the diamond: nothing is reported, in about the time asked."""
    net, reg = bump_net(), region(-1.0, 0.3)
    t0 = time.perf_counter()
    found = sample_box(net, reg, (2,), Checker(net, (2,)), 0.5, torch.Generator().manual_seed(0))
    took = time.perf_counter() - t0
    assert found is None and 0.3 < took < 5.0


def test_verify_decides_the_sliver_by_sampling_and_not_without():
    """CROWN cannot refute it (it is sat) and the attacks start on the plateau: the sampling
    stage decides it; switched off, the same run ends "unknown"."""
    net = bump_net()
    prop = VnnlibProperty((region(),), 2, 1, "bump")
    res = verify(net, prop, 30, methods=("crown",), input_split=False)
    assert res.verdict == "sat" and res.details["decided_by"] == "sample"
    x, y = res.counterexample
    assert prop.regions[0].is_counterexample(x, y) and in_diamond(x)
    off = verify(net, prop, 30, methods=("crown",), input_split=False, sampling=False)
    assert off.verdict == "unknown"


@pytest.mark.parametrize("n_inputs, sampled", [(2, True), (core.SAMPLE_MAX_INPUTS, True),
                                               (core.SAMPLE_MAX_INPUTS + 1, False)])
def test_search_leaves_the_sampling_share_only_for_low_dimensional_regions(n_inputs, sampled):
    net = nn.Sequential(nn.Linear(n_inputs, 3)).eval()
    reg = InputRegion(-torch.ones(n_inputs, dtype=torch.float64),
                      torch.ones(n_inputs, dtype=torch.float64),
                      (Conjunction(torch.ones(1, 3, dtype=torch.float64),
                                   torch.zeros(1, dtype=torch.float64)),))
    prop = VnnlibProperty((reg,), n_inputs, 3, "p")
    run = core._Run(net, prop, (n_inputs,), Checker(net, (n_inputs,)), core.Deadline(100.0), 0)
    expected = core.SAMPLE_SHARE * 100.0 if sampled else core.BAB_RESERVE * 100.0
    assert run._reserve() == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_screening_model_is_the_same_function_on_mlps(slope):
    """The stand-in of a ReLU / LeakyReLU MLP (its traced chain, in-place activations; traced
    through an input shape with channels) gives the model's outputs at random points, to
    float32 rounding."""
    act = nn.ReLU() if slope == 0 else nn.LeakyReLU(slope)
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 16), act, nn.Linear(16, 8), act,
                          nn.Linear(8, 4)).eval()
    fast = screening_model(model, (1, 2, 3))
    assert fast is not model and isinstance(fast[0], nn.Flatten)
    x = 4 * torch.rand(500, 1, 2, 3) - 2
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), rtol=1e-5, atol=1e-5)


def test_screening_model_falls_back_to_the_model_elsewhere():
    model = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 3)).eval()
    assert screening_model(model, (2,)) is model
