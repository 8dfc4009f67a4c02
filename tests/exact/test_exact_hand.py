"""Hand-computed local Lipschitz constants (chain rule, closed activation patterns).

Every case is solved by enumeration (p = inf, 1, 2) and by the MILP (p = inf, 1), and the
witness is checked: inside B, consistent with the pattern, and the pattern's gradient attains
the value."""

import math

import numpy as np
import pytest
import torch

from lipbound.exact.domain import make_ball, vec_norm
from lipbound.exact.milp import milp_local_lipschitz
from lipbound.exact.mlp import MLP
from tests.oracles import enumerate_local_lipschitz

INF = math.inf


def two_relu(v=(1.0, 2.0), slope=0.0):
    """f(x) = act(x1) + 2 act(x2) on R^2."""
    return MLP((np.eye(2), np.array([v])), (np.zeros(2), np.zeros(1)), (slope,))


def cancel(b):
    """f(x) = relu(x + b) - relu(-x + b) on R."""
    return MLP((np.array([[1.0], [-1.0]]), np.array([[1.0, -1.0]])),
               (np.array([b, b]), np.zeros(1)), (0.0,))


def deep_chain(slope=0.0):
    """f(x) = 3 act(act(x) - 1) on R."""
    return MLP((np.array([[1.0]]), np.array([[1.0]]), np.array([[3.0]])),
               (np.zeros(1), np.array([-1.0]), np.zeros(1)), (slope, slope))


def two_outputs():
    """f(x) = (relu(x), -relu(-x)) on R."""
    return MLP((np.array([[1.0], [-1.0]]), np.array([[1.0, 0.0], [0.0, -1.0]])),
               (np.zeros(2), np.zeros(2)), (0.0,))


X0 = torch.tensor([0.4, -0.6], dtype=torch.float64)
CASES = [
    # (name, mlp, x0, eps, p, c, data_range, expected)
    ("x2 stays inactive", two_relu(), X0, 0.5, INF, None, None, 1.0),
    ("both active, l1 of (1,2)", two_relu(), X0, 0.7, INF, None, None, 3.0),
    ("data range keeps x2 < 0", two_relu(), X0, 0.7, INF, None,
     (-1.0, torch.tensor([1.0, -0.05])), 1.0),
    ("l1 ball too small", two_relu(), X0, 0.5, 1, None, None, 1.0),
    ("l1 ball reaches x2 = 0.01", two_relu(), X0, 0.61, 1, None, None, 2.0),
    ("l1 ball touches x2 = 0 exactly", two_relu(), X0, 0.6, 1, None, None, 2.0),
    ("l2 ball too small", two_relu(), X0, 0.5, 2, None, None, 1.0),
    ("l2 ball reaches", two_relu(), X0, 0.61, 2, None, None, math.sqrt(5)),
    ("l2 coupling: not both", two_relu(), torch.tensor([-0.3, -0.3]), 0.4, 2, None, None, 2.0),
    ("l2 coupling: both", two_relu(), torch.tensor([-0.3, -0.3]), 0.43, 2, None, None,
     math.sqrt(5)),
    ("all inactive: zero", two_relu(), torch.tensor([-0.3, -0.3]), 0.29, INF, None, None, 0.0),
    ("leaky inactive x2", two_relu(slope=0.1), X0, 0.5, INF, None, None, 1.2),
    ("leaky both active", two_relu(slope=0.1), X0, 0.7, INF, None, None, 3.0),
    ("jointly unreachable pattern", cancel(-0.1), torch.zeros(1), 1.0, INF, None, None, 1.0),
    ("closed semantics at z = 0", cancel(0.0), torch.zeros(1), 1.0, INF, None, None, 2.0),
    ("closed semantics, eps = 0", cancel(0.0), torch.zeros(1), 0.0, INF, None, None, 2.0),
    ("deep: second layer reachable", deep_chain(), torch.zeros(1), 2.0, INF, None, None, 3.0),
    ("deep: second layer touches 0", deep_chain(), torch.zeros(1), 1.0, INF, None, None, 3.0),
    ("deep: second layer dead", deep_chain(), torch.zeros(1), 0.5, INF, None, None, 0.0),
    ("deep leaky", deep_chain(0.5), torch.zeros(1), 0.5, INF, None, None, 1.5),
    ("spec sums outputs", two_outputs(), torch.zeros(1), 1.0, INF, torch.tensor([1.0, 1.0]),
     None, 2.0),
    ("spec differences outputs", two_outputs(), torch.zeros(1), 1.0, INF,
     torch.tensor([1.0, -1.0]), None, 1.0),
    ("linear model", MLP((np.array([[1.0, -2.0, 0.5]]),), (np.zeros(1),), ()),
     torch.zeros(3), 1.0, INF, None, None, 3.5),
    ("linear model, l1 ball", MLP((np.array([[1.0, -2.0, 0.5]]),), (np.zeros(1),), ()),
     torch.zeros(3), 1.0, 1, None, None, 2.0),
]


def check_witness(r, mlp, x0, eps, p, c, data_range):
    ball = make_ball(mlp, x0, eps, p, data_range)
    assert r.witness.shape == torch.as_tensor(x0).shape
    assert ball.contains(r.witness.numpy(), tol=1e-9)
    pattern = [np.array(v, dtype=bool) for v in r.pattern]
    assert mlp.pattern_violation(r.witness, pattern) <= 1e-7
    q = {INF: 1, 1: INF, 2: 2}[p]
    g = mlp.gradient(r.witness, c, pattern=pattern).numpy()
    assert vec_norm(g, q) == pytest.approx(r.lower, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_enumeration_hand(case):
    _, mlp, x0, eps, p, c, dr, expected = case
    r = enumerate_local_lipschitz(mlp, x0, eps, p, c, data_range=dr)
    assert r.status == "optimal"
    assert r.value == pytest.approx(expected, abs=1e-9)
    assert r.lower == r.upper == r.value
    check_witness(r, mlp, x0, eps, p, c, dr)


@pytest.mark.parametrize("case", [c for c in CASES if c[4] != 2], ids=[c[0] for c in CASES
                                                                     if c[4] != 2])
def test_milp_hand(case):
    _, mlp, x0, eps, p, c, dr, expected = case
    r = milp_local_lipschitz(mlp, x0, eps, p, c, data_range=dr)
    assert r.status == "optimal"
    assert r.lower == pytest.approx(expected, abs=1e-9)
    assert r.upper == pytest.approx(expected, abs=1e-7)
    assert r.value == r.upper
    check_witness(r, mlp, x0, eps, p, c, dr)


def test_model_as_sequential_and_batched_x0():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2), torch.nn.ReLU(),
                              torch.nn.Linear(2, 1))
    with torch.no_grad():
        net[1].weight.copy_(torch.eye(2))
        net[1].bias.zero_()
        net[3].weight.copy_(torch.tensor([[1.0, 2.0]]))
        net[3].bias.zero_()
    x0 = X0.reshape(1, 2)
    r1 = enumerate_local_lipschitz(net, x0, 0.7, "inf")
    r2 = milp_local_lipschitz(net, x0, 0.7, "inf")
    assert r1.value == pytest.approx(3.0) and r2.value == pytest.approx(3.0)
    assert r1.witness.shape == (1, 2) and r2.witness.shape == (1, 2)
    d = r2.to_dict()
    assert d["status"] == "optimal" and d["method"] == "milp" and d["norm"] == "inf"
    import json

    json.dumps(d)
    json.dumps(r1.to_dict())
