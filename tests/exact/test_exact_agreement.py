"""Enumeration and MILP agree on random tiny ReLU / LeakyReLU nets, both dominate sampled
autograd gradients, their witnesses lie in B and attain the value, and sound tighter
pre-activation bounds leave the MILP's value unchanged."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lipbound.errors import InputError, ProblemTooLargeError
from lipbound.exact.domain import (
    UNSTABLE,
    interval_bounds,
    make_ball,
    stability,
    vec_norm,
)
from lipbound.exact.milp import milp_local_lipschitz
from lipbound.exact.mlp import MLP
from lipbound.norms import dual_norm
from tests.oracles import (
    enumerate_local_lipschitz,
    exact_preact_bounds,
    random_mlp,
    sample_ball,
    sampled_gradient_norms,
    sampled_lower,
)

FAST = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@st.composite
def problems(draw, norms=(math.inf, 1.0)):
    seed = draw(st.integers(0, 10_000))
    n_in = draw(st.integers(1, 3))
    hidden = draw(st.lists(st.integers(2, 5), min_size=1, max_size=2))
    n_out = draw(st.integers(1, 2))
    slope = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5]))
    p = draw(st.sampled_from(norms))
    eps = draw(st.sampled_from([0.3, 0.7, 1.5]))
    mlp = random_mlp([n_in, *hidden, n_out], seed, negative_slope=slope, weight_std=1.0)
    rng = np.random.default_rng(seed)
    x0 = 0.5 * rng.standard_normal(n_in)
    c = torch.from_numpy(rng.standard_normal(n_out))
    data_range = None
    if rng.uniform() < 0.5:  # a box around a point near x0 (x0 itself may lie outside it)
        centre = x0 + rng.uniform(-0.1, 0.1, n_in)
        lo = centre - rng.uniform(0.0, 1.0, n_in)
        hi = centre + rng.uniform(0.0, 1.0, n_in)
        if rng.uniform() < 0.5:
            lo, hi = float(lo.min()), torch.from_numpy(hi)  # scalar and tensor mixed
        data_range = (lo, hi)
    x0 = torch.from_numpy(x0)
    return mlp, x0, eps, p, c, data_range


def check_result(r, mlp, x0, eps, p, c, data_range):
    ball = make_ball(mlp, x0, eps, p, data_range)
    assert ball.contains(r.witness.numpy(), tol=1e-9)
    pattern = [np.array(v, dtype=bool) for v in r.pattern]
    assert mlp.pattern_violation(r.witness, pattern) <= 1e-6
    g = mlp.gradient(r.witness, c, pattern=pattern).numpy()
    assert vec_norm(g, dual_norm(ball.p)) == pytest.approx(r.lower, rel=1e-12, abs=1e-12)
    assert r.lower <= r.upper


@FAST
@given(problems())
def test_enumeration_equals_milp(prob):
    mlp, x0, eps, p, c, dr = prob
    e = enumerate_local_lipschitz(mlp, x0, eps, p, c, data_range=dr)
    m = milp_local_lipschitz(mlp, x0, eps, p, c, data_range=dr)
    assert m.status == "optimal"
    assert m.value == pytest.approx(e.value, rel=1e-6, abs=1e-9)
    assert m.lower == pytest.approx(e.value, rel=1e-6, abs=1e-9)
    check_result(e, mlp, x0, eps, p, c, dr)
    check_result(m, mlp, x0, eps, p, c, dr)
    # both dominate autograd gradients sampled in B
    s = sampled_lower(mlp, x0, eps, p, c, dr, n=300, seed=1)
    assert e.value >= s - 1e-9
    assert m.value >= s - 1e-9


@settings(max_examples=10, deadline=None, derandomize=True)
@given(problems(norms=(2.0,)))
def test_enumeration_l2_dominates_samples(prob):
    mlp, x0, eps, p, c, dr = prob
    e = enumerate_local_lipschitz(mlp, x0, eps, p, c, data_range=dr)
    check_result(e, mlp, x0, eps, p, c, dr)
    assert e.value >= sampled_lower(mlp, x0, eps, p, c, dr, n=300, seed=2) - 1e-9


@settings(max_examples=12, deadline=None, derandomize=True)
@given(problems())
def test_milp_with_exact_preact_bounds_same_value(prob):
    mlp, x0, eps, p, c, dr = prob
    base = milp_local_lipschitz(mlp, x0, eps, p, c, data_range=dr)
    tight = exact_preact_bounds(mlp, x0, eps, p, dr)
    ibp = interval_bounds(mlp, make_ball(mlp, x0, eps, p, dr))
    for (lt, ut), (li, ui) in zip(tight, ibp):  # they are tighter (or equal)
        assert np.all(lt.numpy() >= li - 1e-7) and np.all(ut.numpy() <= ui + 1e-7)
    r = milp_local_lipschitz(mlp, x0, eps, p, c, preact_bounds=tight, data_range=dr)
    assert r.status == "optimal"
    assert r.value == pytest.approx(base.value, rel=1e-6, abs=1e-9)
    assert r.details["preact_bounds"] == "given"
    assert r.n_binaries <= base.n_binaries


def test_random_points_never_exceed_exact_value_many_samples():
    """A larger net: exact MILP value >= max of 20k sampled gradient norms, p = inf and 1."""
    mlp = random_mlp([4, 6, 6, 2], 7, weight_std=1.0)
    rng = np.random.default_rng(0)
    x0 = torch.from_numpy(rng.standard_normal(4))
    c = torch.tensor([1.0, -1.0], dtype=torch.float64)
    for p, eps in ((math.inf, 0.3), (1.0, 0.6)):
        r = milp_local_lipschitz(mlp, x0, eps, p, c)
        assert r.status == "optimal"
        ball = make_ball(mlp, x0, eps, p)
        pts = sample_ball(ball, 20_000, seed=3)
        s = sampled_gradient_norms(mlp.to_sequential(), pts, c.numpy(), dual_norm(p))
        assert r.value >= s.max() - 1e-9
        assert r.lower == pytest.approx(r.value, rel=1e-6)
        e = enumerate_local_lipschitz(mlp, x0, eps, p, c)
        assert r.value == pytest.approx(e.value, rel=1e-6)


def test_enumeration_counts_and_cap():
    mlp = random_mlp([3, 6, 5, 1], 0, weight_std=1.0)
    x0 = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    ball = make_ball(mlp, x0, 0.8, math.inf)
    n_unst = sum(int(np.sum(s == UNSTABLE)) for s in stability(interval_bounds(mlp, ball)))
    r = enumerate_local_lipschitz(mlp, x0, 0.8, math.inf)
    assert r.n_unstable == n_unst and n_unst >= 2
    assert 1 <= r.details["n_patterns"] <= 2 ** n_unst
    with pytest.raises(ProblemTooLargeError, match="max_unstable"):
        enumerate_local_lipschitz(mlp, x0, 0.8, math.inf, max_unstable=n_unst - 1)


def test_unsound_preact_bounds_are_rejected_when_detectable():
    mlp = random_mlp([2, 3, 1], 0)
    x0 = torch.zeros(2)
    far = [(torch.full((3,), 100.0), torch.full((3,), 101.0))]  # misses the interval bounds
    with pytest.raises(InputError, match="sound"):
        milp_local_lipschitz(mlp, x0, 0.1, math.inf, preact_bounds=far)


SHARED = Path(__file__).resolve().parents[2].parent / "shared"
MLP16 = SHARED / "benchmarks" / "random" / "mlp16.npz"


def _load_mlp16():
    if not MLP16.exists():
        pytest.skip("../shared/benchmarks/random/mlp16.npz not present")
    d = np.load(MLP16)
    mlp = MLP(tuple(d[f"{i}.weight"] for i in (1, 3, 5)), tuple(d[f"{i}.bias"] for i in (1, 3, 5)),
              (0.0, 0.0))
    return mlp, d["__x0"]


def test_mlp16_anchor_row_4():
    """The shared benchmark's exact figure (eps 0.05: 0.7108 = max over rows, attained by row 4)."""
    mlp, x0 = _load_mlp16()
    r = milp_local_lipschitz(mlp, x0, 0.05, math.inf, np.eye(10)[4], timeout=120)
    assert r.status == "optimal"
    assert r.value == pytest.approx(0.7108, abs=6e-5)
    assert r.lower == pytest.approx(r.value, rel=1e-6)


@pytest.mark.slow
def test_mlp16_anchor_all_rows():
    mlp, x0 = _load_mlp16()
    vals = [milp_local_lipschitz(mlp, x0, 0.05, math.inf, np.eye(10)[s], timeout=300)
            for s in range(10)]
    assert all(r.status == "optimal" for r in vals)
    assert max(r.value for r in vals) == pytest.approx(0.7108, abs=6e-5)
