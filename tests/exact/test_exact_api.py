"""exact_local_lipschitz (method "exact"): agrees with pattern enumeration on tiny ReLU and
LeakyReLU nets (l_inf and l_1, with unstable neurons, with and without a data range), the CROWN
and interval big-M give the same optimum, witnesses lie in the set and attain ``lower``."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lipbound.exact.api import exact_local_lipschitz
from lipbound.exact.domain import make_ball
from lipbound.exact.mlp import MLP
from tests.oracles import enumerate_local_lipschitz, random_sequential

CASES = [  # (sizes, seed, negative slope, eps, norm, data range)
    ([3, 6, 5, 2], 3, 0.0, 0.7, math.inf, None),
    ([3, 6, 5, 2], 3, 0.0, 0.7, 1.0, None),
    ([2, 5, 4, 1], 11, 0.1, 0.9, math.inf, (-0.5, 0.6)),
    ([4, 5, 2], 5, 0.3, 1.2, 1.0, (-1.0, 0.8)),
    ([3, 4, 4, 2], 8, 0.0, 0.8, math.inf, (-0.6, 1.0)),
    ([3, 4, 4, 2], 9, 0.2, 0.6, 1.0, None),
]


def _net(sizes, seed, slope):
    layers = random_sequential(sizes, seed, slope, weight_std=1.0)
    return nn.Sequential(nn.Flatten(), *layers).eval()


def _x0(n, seed):
    return torch.from_numpy(0.3 * np.random.default_rng(seed).standard_normal(n))


def _autograd_norm(net, w, c, q):
    x = w.detach().to(torch.float64).reshape(1, -1).clone().requires_grad_(True)
    net64 = nn.Sequential(*[m for m in net]).double()
    (g,) = torch.autograd.grad((net64(x)[0] * c).sum(), x)
    return float(torch.linalg.vector_norm(g, ord=q))


@pytest.mark.parametrize("case", CASES)
def test_exact_agrees_with_enumeration(case):
    sizes, seed, slope, eps, p, dr = case
    net = _net(sizes, seed, slope)
    x0 = _x0(sizes[0], seed)
    res = {bm: exact_local_lipschitz(net, x0, eps, p, data_range=dr, big_m=bm)
           for bm in ("crown", "interval")}
    mlp = MLP.from_sequential(net)
    ball = make_ball(mlp, x0, eps, p, dr)
    q = {math.inf: 1.0, 1.0: math.inf}[p]
    assert sum(row["n_unstable"] for row in res["interval"].details["rows"]) > 0
    for s, c in enumerate(torch.eye(sizes[-1], dtype=torch.float64)):
        e = enumerate_local_lipschitz(mlp, x0, eps, p, c, data_range=dr).value
        for bm, r in res.items():
            assert r.status == "certified" and r.method == "exact"
            assert float(r.upper[s]) == pytest.approx(e, rel=1e-6, abs=1e-9), bm
            assert float(r.lower[s]) == pytest.approx(e, rel=1e-6, abs=1e-9), bm
            assert float(r.lower[s]) <= float(r.upper[s])
            assert ball.contains(r.witness[s].numpy(), tol=1e-12)
            assert _autograd_norm(net, r.witness[s], c, q) == pytest.approx(
                float(r.lower[s]), rel=1e-12, abs=1e-15)
    # CROWN bounds never need more binaries than intervals
    for a, b in zip(res["crown"].details["rows"], res["interval"].details["rows"]):
        assert a["n_binaries"] <= b["n_binaries"]


def test_spec_rows_and_result_fields():
    net = _net([3, 6, 5, 2], 3, 0.0)
    x0 = _x0(3, 3)
    C = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    r = exact_local_lipschitz(net, x0, 0.7, math.inf, spec=C)
    e = enumerate_local_lipschitz(MLP.from_sequential(net), x0, 0.7, math.inf, C[0]).value
    assert r.upper.shape == r.lower.shape == (1,)
    assert r.witness.shape == (1, 3)
    assert r.value == pytest.approx(e, rel=1e-6)
    d = r.to_dict()
    assert d["method"] == "exact" and d["status"] == "certified"
    assert d["details"]["big_m"] == "crown"


def test_non_sequential_module_with_image_input():
    """Any model that traces to a Flatten/Linear/ReLU chain is accepted."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(4)
            self.a = nn.Linear(4, 5)
            self.b = nn.Linear(5, 1)

        def forward(self, x):
            return self.b(torch.relu(self.a(x.flatten(1))))

    net = Net().eval()
    x0 = torch.tensor([[0.1, -0.3], [0.2, 0.05]])
    r = exact_local_lipschitz(net, x0, 0.4, math.inf)
    seq = nn.Sequential(nn.Flatten(), net.a, nn.ReLU(), net.b).eval()
    e = enumerate_local_lipschitz(seq, x0, 0.4, math.inf).value
    assert r.value == pytest.approx(e, rel=1e-6)
    assert r.witness.shape == (1, 2, 2)


def test_local_lipschitz_method_exact_sits_between_attained_and_crown():
    import lipbound

    net = _net([3, 6, 5, 2], 3, 0.0)
    x0 = _x0(3, 3)
    ex = lipbound.local_lipschitz(net, x0, 0.7, method="exact")
    cr = lipbound.local_lipschitz(net, x0, 0.7, method="crown")
    assert ex.method == "exact" and ex.status == "certified"
    assert torch.all(ex.upper <= cr.upper * (1 + 1e-7))
    assert torch.all(cr.lower <= ex.upper * (1 + 1e-7))
    assert torch.all(ex.lower >= cr.lower - 1e-9)  # the MILP witness beats sampling
