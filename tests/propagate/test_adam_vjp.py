"""The replacements of torch pieces whose first use imports torch._dynamo or sympy must give
the same numbers as those pieces, bit for bit: lipbound.propagate.adam.Adam against
torch.optim.Adam(foreach=True) + ExponentialLR, lipbound.autodiff.vjp against
torch.autograd.grad with a cotangent (first and second order)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lipbound.autodiff import vjp
from lipbound.propagate.adam import Adam

pytestmark = pytest.mark.usefixtures("one_thread")


def _loss(ps: list[torch.Tensor], k: int) -> torch.Tensor:
    a, b = ps
    return (torch.sin(3 * a + k) ** 2).sum() + ((b - 0.3 * k) ** 2 * a[:3].sum()).sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adam_matches_torch_adam(dtype):
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(7, generator=gen, dtype=dtype), torch.randn(2, 3, generator=gen,
                                                                    dtype=dtype)]
    ours = [t.clone().requires_grad_() for t in init]
    ref = [t.clone().requires_grad_() for t in init]
    extra = torch.zeros(2, dtype=dtype, requires_grad=True)  # never gets a gradient
    opt = Adam([{"params": [ours[0]], "lr": 0.1}, {"params": [ours[1], extra], "lr": 0.03}])
    torch_opt = torch.optim.Adam([{"params": [ref[0]], "lr": 0.1},
                                  {"params": [ref[1], extra], "lr": 0.03}], foreach=True)
    sched = torch.optim.lr_scheduler.ExponentialLR(torch_opt, 0.95)
    for k in range(12):
        opt.zero_grad()
        torch_opt.zero_grad()
        _loss(ours, k).backward()
        _loss(ref, k).backward()
        opt.step()
        torch_opt.step()
        sched.step()
        for a, b in zip(ours, ref):
            assert torch.equal(a, b), k


def test_vjp_matches_autograd_grad():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 9, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, generator=gen, dtype=torch.float64)
    y = F.relu(F.conv2d(x, w, stride=2, padding=1)) * 1.7
    c = torch.randn(y.shape, generator=gen, dtype=torch.float64, requires_grad=True)
    (ours,) = vjp(y, x, c, create_graph=True, retain_graph=True)
    (ref,) = torch.autograd.grad(y, x, c, create_graph=True, retain_graph=True)
    assert torch.equal(ours, ref)
    probe = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    (d_ours,) = torch.autograd.grad((ours * probe).sum(), c, retain_graph=True)
    (d_ref,) = torch.autograd.grad((ref * probe).sum(), c)
    assert torch.equal(d_ours, d_ref)
