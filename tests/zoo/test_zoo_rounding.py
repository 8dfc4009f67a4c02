"""Zoo models at eps 0: the CROWN output bounds are then only their rounding allowances wide
(lipbound's own tally, :mod:`lipbound.propagate.own_rounding`, and the forward pass's error
bound), and must still contain the model's own forward pass, float64 and float32; and at
eps > 0 the points a signed-gradient ascent finds toward each bound."""

from __future__ import annotations

import pytest
import torch

import lipbound
from lipbound.models.zoo import ZOO, zoo_input, zoo_model

NAMES = ["resnet18", "mnist1d-cnn"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", NAMES)
def test_point_bounds_contain_the_forward_pass(name, dtype):
    model, x = zoo_model(name, dtype=dtype), zoo_input(name).to(dtype)
    lo, up = lipbound.output_bounds(model, x, 0.0, method="crown", progress=False)
    with torch.no_grad():
        y = model(x.unsqueeze(0))[0].double()
    assert bool(((y >= lo) & (y <= up)).all())
    if dtype == torch.float64:  # only rounding allowances: ~1e-16 relative to the values
        assert float((up - lo).max()) < 1e-9 * float(y.abs().max())


@pytest.mark.parametrize("name", NAMES)
def test_ascent_points_stay_inside(name):
    """8 signed-gradient steps per bound from the centre and two corners, float32 and
    float64 passes: every point found lies inside the certified bounds."""
    eps = ZOO[name].eps
    for dtype in (torch.float64, torch.float32):
        model, x0 = zoo_model(name, dtype=dtype), zoo_input(name).to(dtype)
        lo, up = lipbound.output_bounds(model, x0, eps, method="crown", progress=False)
        K = lo.shape[0]
        starts = torch.stack([x0, x0 + eps, x0 - eps])
        for k in range(K):
            for sign in (1.0, -1.0):
                x = starts.clone().requires_grad_(True)
                for _ in range(8):
                    (g,) = torch.autograd.grad((sign * model(x)[:, k]).sum(), x)
                    with torch.no_grad():
                        x = (x + eps / 4 * g.sign()).clamp(x0 - eps, x0 + eps)
                    x.requires_grad_(True)
                with torch.no_grad():
                    y = model(x)[:, k].double()
                assert bool((y <= up[k]).all() and (y >= lo[k]).all()), (k, sign)
