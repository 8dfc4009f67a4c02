"""Sampled soundness checks of the three bound calls on one model (shared by the user-model
test files): outputs, gradients and Jacobians at points of an l_inf ball must lie inside the
bounds."""

from __future__ import annotations

import copy

import pytest
import torch

import lipbound
from lipbound.graph.trace import trace
from tests.conftest import evaluate_graph

EPS = 0.02


def x_of(shape):
    """The seeded centre of the ball for an input of per-sample ``shape``."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(5))


def ball_points(x, n, seed, eps=EPS):
    """The centre and n - 1 points of the l_inf ball (half of them vertices), float64."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n - 1, *x.shape, generator=g, dtype=torch.float64) * 2 - 1
    u[n // 2:] = u[n // 2:].sign()
    return torch.cat([x.double()[None], x.double()[None] + eps * u])


def gradients(model64, pts):
    """Autograd gradients of every output at ``pts``: [K, n, *in] (through
    ``torch.func.functionalize`` when the forward overwrites a value its backward needs)."""
    try:
        return _gradients(model64, pts)
    except RuntimeError as exc:
        if "inplace operation" not in str(exc):
            raise
        return _gradients(torch.func.functionalize(model64), pts)


def _gradients(fn, pts):
    p = pts.clone().requires_grad_(True)
    y = fn(p)
    return torch.stack([torch.autograd.grad(y[:, k].sum(), p, retain_graph=True)[0]
                        for k in range(y.shape[1])])


def assert_graph_reproduces(model, shape, n=50, eps=EPS):
    """The traced graph of the float64 model evaluates to its outputs at n points of the ball
    around :func:`x_of` (the model gets its own copy of the points: in-place models write)."""
    model64 = copy.deepcopy(model).double()
    graph = trace(model64, x_of(shape)[None].double())
    pts = ball_points(x_of(shape), n, 3, eps)
    with torch.no_grad():
        want = model64(pts.clone())
    got = evaluate_graph(graph, pts)[graph.output]
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12), (got - want).abs().max()


def assert_outputs_inside(model, x, n=1000):
    """``output_bounds`` (ibp, crown, alpha-crown) contain the outputs at n sampled points,
    in float64 and in the model's own float32 forward."""
    pts = ball_points(x, n, 1)
    with torch.no_grad():
        ys = [copy.deepcopy(model).double()(pts), model(pts.float()).double()]
    for method in ("ibp", "crown", "alpha-crown"):
        lo, up = lipbound.output_bounds(model, x, EPS, method=method, iterations=5)
        assert torch.isfinite(lo).all() and torch.isfinite(up).all()
        for y in ys:
            assert (y >= lo).all() and (y <= up).all(), method


def assert_gradients_inside(model, x, n=300):
    """``local_lipschitz`` is at least the sampled gradients' l_1 norms and
    ``jacobian_bounds`` contain them."""
    G = gradients(copy.deepcopy(model).double(), ball_points(x, n, 2))
    r = lipbound.local_lipschitz(model, x, EPS)
    assert (G.flatten(2).abs().sum(-1).max(1).values <= r.upper).all()
    lo, up = lipbound.jacobian_bounds(model, x, EPS)
    J = G.transpose(0, 1).reshape(G.shape[1], *lo.shape)
    assert (J >= lo).all() and (J <= up).all()


def model_tests(models: dict, slow: set):
    """The two sampled-soundness tests over ``models`` (name -> (model, input shape)), those
    in ``slow`` marked slow; a test module binds them to ``test_...`` names."""
    names = [pytest.param(k, marks=pytest.mark.slow) if k in slow else k for k in sorted(models)]

    @pytest.mark.parametrize("name", names)
    def outputs(name):
        model, shape = models[name]
        assert_outputs_inside(model, x_of(shape))

    @pytest.mark.parametrize("name", names)
    def gradients_(name):
        model, shape = models[name]
        assert_gradients_inside(model, x_of(shape))

    return outputs, gradients_
