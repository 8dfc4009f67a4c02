"""Floating-point soundness on a seeded family of folded float32 models (issue 14).

Every model has a rewrite that used to round in float32 (BatchNorm folded into the Linear or
Conv before it, input normalisation folded into the next Linear, Linear -> Linear merged) and
large BatchNorm statistics that make rounding visible. At the centre and at sampled points of
the ball the bounds must contain

- the real-arithmetic function of the stored weights (float64 forward pass of the model cast
  to float64: exact weights, 2^-53 rounding), and the model's own float32 forward pass;
- the float64 autograd gradients (Jacobian bounds elementwise, Lipschitz uppers in norm).

Mutation checks (run by hand, see the commit message): with the forward-pass allowance removed
(``execution_error`` returning zeros) the float32 containment fails; with the folding done in
the model's float32 (``_exact64`` returning the tensor unchanged) the Jacobian containment
fails.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import lipbound
from lipbound.bounds.rounding import Precision, gamma, outward, unit_roundoff


class Normalise(nn.Module):
    """(x - mu) / sd with float32 buffers, as user models do it."""

    def __init__(self, n: int, gen: torch.Generator) -> None:
        super().__init__()
        self.register_buffer("mu", torch.rand(n, generator=gen) * 4 - 2)
        self.register_buffer("sd", torch.rand(n, generator=gen) * 0.3 + 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mu) / self.sd


ACTS = (nn.ReLU, nn.Tanh, nn.GELU, nn.Sigmoid, lambda: nn.LeakyReLU(0.1), nn.Softplus)


def _bn(bn: nn.Module, gen: torch.Generator) -> nn.Module:
    n = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.rand(n, generator=gen) * 6 - 3)
        bn.running_var.copy_(torch.rand(n, generator=gen) * 5 + 0.01)
        bn.weight.copy_(torch.rand(n, generator=gen) * 6 - 3)
        bn.bias.copy_(torch.rand(n, generator=gen) * 2 - 1)
    return bn


def family_model(seed: int) -> tuple[nn.Module, torch.Tensor]:
    """Model ``seed`` of the family (four kinds, six activations), with an input."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    act = ACTS[seed % len(ACTS)]
    kind = seed % 4
    if kind == 0:  # Linear + BatchNorm1d
        m = nn.Sequential(nn.Linear(6, 8), _bn(nn.BatchNorm1d(8), gen), act(), nn.Linear(8, 3))
        x = torch.rand(6, generator=gen)
    elif kind == 1:  # Conv + BatchNorm2d
        m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), _bn(nn.BatchNorm2d(4), gen), act(),
                          nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
        x = torch.rand(2, 5, 5, generator=gen)
    elif kind == 2:  # input normalisation folded into the first Linear
        m = nn.Sequential(Normalise(7, gen), nn.Linear(7, 9), act(), nn.Linear(9, 3))
        x = torch.rand(7, generator=gen)
    else:  # Linear -> Linear merged
        m = nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 12), act(), nn.Linear(12, 4))
        x = torch.rand(5, generator=gen)
    return m.eval(), x


def _points(x: torch.Tensor, eps: float, n: int, seed: int) -> torch.Tensor:
    """The centre, then uniform points and corners of the l_inf ball, as float32 inputs."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, *x.shape, generator=gen) * 2 - 1
    corners = torch.sign(torch.rand(n, *x.shape, generator=gen) - 0.5)
    pts = torch.cat([x[None], x + eps * u, x + eps * corners])
    # float32 points inside the ball: round towards the centre when rounding left it
    pts = pts.float()
    out = (pts.double() - x.double()).abs() > eps
    return torch.where(out, x.float().expand_as(pts), pts)


SEEDS = range(24)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_output_bounds_contain_real_and_float32_passes(seed: int, eps: float) -> None:
    m, x = family_model(seed)
    before = copy.deepcopy(m.state_dict())
    lo, hi = lipbound.output_bounds(m, x, eps=eps, method="crown")
    pts = _points(x, eps, 64, seed)
    with torch.no_grad():
        f32 = m(pts).double()
        f64 = copy.deepcopy(m).double()(pts.double())
    for f in (f32, f64):
        assert bool((f >= lo).all() and (f <= hi).all()), (f - hi).max().item()
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("seed", SEEDS)
def test_jacobian_and_lipschitz_contain_autograd(seed: int) -> None:
    m, x = family_model(seed)
    eps = 1e-3 if seed % 2 else 0.0
    jlo, jhi = lipbound.jacobian_bounds(m, x, eps=eps)
    r_inf = lipbound.local_lipschitz(m, x, eps=eps, method="crown")
    r_2 = lipbound.local_lipschitz(m, x, eps=eps, norm=2, method="crown")
    m64 = copy.deepcopy(m).double()
    # points of the l_2 ball are points of the l_inf ball of the same radius: check both there
    # only at the centre for l_2 (the l_inf sample may leave the l_2 ball)
    for i, p in enumerate(_points(x, eps, 8, seed).double()):
        jac = torch.autograd.functional.jacobian(lambda v: m64(v[None])[0], p)
        assert bool((jac >= jlo).all() and (jac <= jhi).all()), \
            max((jlo - jac).max().item(), (jac - jhi).max().item())
        norms = jac.flatten(1).abs().sum(1)  # l_inf ball: dual norm l_1
        assert bool((norms <= r_inf.upper).all()), (norms - r_inf.upper).max().item()
        if i == 0:
            norms2 = jac.flatten(1).norm(dim=1)
            assert bool((norms2 <= r_2.upper).all()), (norms2 - r_2.upper).max().item()


def test_gamma_and_units() -> None:
    assert unit_roundoff(torch.float32) == 2.0 ** -24
    assert gamma(10, 2.0 ** -24) == pytest.approx(10 * 2.0 ** -24, rel=1e-6)
    assert gamma(2 ** 24, 2.0 ** -24) == math.inf
    assert Precision.of(torch.float32).u_operand == 0.0


def test_outward_never_moves_inward() -> None:
    v = torch.tensor([1.0, -3.5, 1e300, 0.0], dtype=torch.float64)
    lo, hi = outward(v, v, 0.0)
    assert bool((lo < v).all() and (hi > v).all())


def test_overflowing_eps_is_refused() -> None:
    m, x = family_model(0)
    with pytest.raises(lipbound.errors.InputError, match="overflow"):
        lipbound.output_bounds(m, x, eps=1e308)
