"""Proof goals of branch and bound (``lipbound.prove_outputs``): a goal is a disjunction of
output rows decided per sub-domain, as refuting a conjunction of output constraints needs.

Exact cases: (x, -x) on [-1, 1] exceeds -0.1 in one row or the other everywhere, although
neither row does alone; a goal that fails at a point is never proven. Sampling: on random
ReLU networks (input splits and ReLU splits), every proven goal holds at every sampled point,
and the verifier refutes a conjunction that no single row refutes.
"""

from __future__ import annotations

import pytest
import torch

import lipbound
from lipbound.errors import InputError
from tests.oracles import random_sequential


def _mirror() -> torch.nn.Module:
    lin = torch.nn.Linear(1, 2, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    return lin.eval()


def test_a_goal_holds_per_subdomain_though_no_row_holds_alone():
    net, x = _mirror(), torch.zeros(1, dtype=torch.float64)
    d = torch.tensor([-0.1, -0.1], dtype=torch.float64)
    both = lipbound.prove_outputs(net, x, 1.0, None, d, groups=[0, 0], timeout=5,
                                  progress=False)
    assert both.status == "below threshold" and both.proven.tolist() == [True]
    assert float(both.lower.max()) <= -1 + 1e-9  # no row holds on the whole set
    apart = lipbound.prove_outputs(net, x, 1.0, None, d, timeout=1, progress=False)
    assert apart.proven.tolist() == [False, False]


def test_a_goal_that_fails_at_a_point_is_never_proven():
    net, x = _mirror(), torch.zeros(1, dtype=torch.float64)
    d = torch.tensor([0.2, 0.2], dtype=torch.float64)  # x = 0.1: 0.1 <= 0.2 and -0.1 <= 0.2
    res = lipbound.prove_outputs(net, x, 1.0, None, d, groups=[0, 0], timeout=1,
                                 progress=False)
    assert res.proven.tolist() == [False]


@pytest.mark.parametrize("split,n_in", [("input", 3), ("relu", 10)])
def test_proven_goals_hold_at_sampled_points(split, n_in):
    net = random_sequential([n_in, 16, 16, 3], 5, 0.0).double().eval()
    gen = torch.Generator().manual_seed(5)
    x0 = torch.randn(n_in, generator=gen, dtype=torch.float64)
    eps = 0.3
    pts = x0 + eps * (2 * torch.rand(20000, n_in, generator=gen, dtype=torch.float64) - 1)
    with torch.no_grad():
        y = net(pts)
    C = torch.tensor([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0], [0.0, 1.0, -1.0],
                      [0.0, -1.0, 1.0]], dtype=torch.float64)
    v = y @ C.t()  # [N, 4]
    # goal 0: rows 0 or 1 above a threshold met at every sample by one of them
    t01 = torch.maximum(v[:, 0], v[:, 1]).min() - 0.05
    # goal 1: rows 2 or 3 (= -row 2): their max is |row 2|, which sampling says dips to ~0
    t23 = torch.maximum(v[:, 2], v[:, 3]).min() + 1e-3
    d = torch.stack([t01, t01, t23, t23])
    res = lipbound.prove_outputs(net, x0, eps, C, d, groups=[0, 0, 1, 1], timeout=8,
                                 split=split, progress=False)
    assert res.proven[1].item() is False  # violated at a sampled point
    for g, rows in ((0, [0, 1]), (1, [2, 3])):
        if res.proven[g]:
            assert (v[:, rows] > d[rows]).any(1).all()
    assert (v >= res.lower - 1e-9).all() and (v <= res.upper + 1e-9).all()


def test_groups_are_checked():
    net, x = _mirror(), torch.zeros(1, dtype=torch.float64)
    with pytest.raises(InputError, match="goal ids"):
        lipbound.prove_outputs(net, x, 1.0, None, [0.0, 0.0], groups=[0], timeout=1)
    with pytest.raises(InputError, match="goal ids"):
        lipbound.prove_outputs(net, x, 1.0, None, [0.0, 0.0], groups=[0.5, 1], timeout=1)
