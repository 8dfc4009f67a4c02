"""Every lipbound method on every zoo model (:mod:`lipbound.models.zoo`), with bounds that
contain 4000 sampled outputs, gradients and gradient norms of the float64 model.

Default suite: each model x method once, on the float64 model (whose bounds are tight enough
for containment to mean something; alpha-CROWN with 2 iterations). Slow: alpha-CROWN with
its default iterations, the float32 model for every method (its bounds must contain the
float64 real function and the float32 forward pass), a 4x radius.
"""

from __future__ import annotations

import math

import pytest
import torch

import lipbound
from lipbound.models.zoo import ZOO, ZOO_NAMES, zoo_input, zoo_model
from tests.zoo.sampling import ball_points, outputs_and_gradients

N = 4000
NORMS = {"inf": math.inf, "2": 2.0, "1": 1.0}
DUAL = {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}
_CACHE: dict = {}


def _samples(name: str, eps: float, p: float):
    """(outputs [N, K], gradients [K, N, *in]) of the float64 model in the eps ball."""
    key = (name, eps, p)
    if key not in _CACHE:
        x = zoo_input(name)
        pts = ball_points(x, eps, p, N, seed=1)
        _CACHE[key] = outputs_and_gradients(zoo_model(name, dtype=torch.float64), pts,
                                            ZOO[name].input_shape)
    return _CACHE[key]


def _within(v: torch.Tensor, lo: torch.Tensor, up: torch.Tensor) -> bool:
    return bool(((v >= lo) & (v <= up)).all())


def _check_outputs(name: str, dtype: torch.dtype, method: str, eps: float, **kw) -> None:
    model, x = zoo_model(name, dtype=dtype), zoo_input(name).to(dtype)
    lo, up = lipbound.output_bounds(model, x, eps, method=method, progress=False, **kw)
    assert lo.shape == up.shape == (ZOO[name].num_outputs,)
    assert torch.isfinite(lo).all() and torch.isfinite(up).all()
    y64, _ = _samples(name, eps, math.inf)
    assert _within(y64, lo, up)
    if dtype == torch.float32:  # the model's own forward pass at the (rounded) points
        pts = ball_points(zoo_input(name), eps, math.inf, N, seed=1)
        with torch.no_grad():
            y32 = model(pts.float().reshape(-1, *ZOO[name].input_shape)).double()
        assert _within(y32, lo, up)


def _check_lipschitz(name: str, dtype: torch.dtype, p: float, eps: float) -> None:
    model, x = zoo_model(name, dtype=dtype), zoo_input(name).to(dtype)
    r = lipbound.local_lipschitz(model, x, eps, norm=p, method="crown", progress=False)
    assert torch.isfinite(r.upper).all()
    _, G = _samples(name, eps, p)
    sampled = torch.linalg.vector_norm(G.flatten(2), ord=DUAL[p], dim=2).amax(dim=1)
    assert (r.upper >= sampled).all(), (r.upper - sampled).min()
    assert (r.upper >= r.lower).all()


def _check_jacobian(name: str, dtype: torch.dtype, eps: float) -> None:
    model, x = zoo_model(name, dtype=dtype), zoo_input(name).to(dtype)
    lo, up = lipbound.jacobian_bounds(model, x, eps)
    assert lo.shape == (ZOO[name].num_outputs, *ZOO[name].input_shape)
    _, G = _samples(name, eps, math.inf)
    assert _within(G, lo.unsqueeze(1), up.unsqueeze(1))


@pytest.mark.parametrize("name", ZOO_NAMES)
@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
def test_zoo_output_bounds_contain_samples(name, method):
    kw = {"iterations": 2} if method == "alpha-crown" else {}
    _check_outputs(name, torch.float64, method, ZOO[name].eps, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_float32_crown_bounds_contain_both_forward_passes(name):
    _check_outputs(name, torch.float32, "crown", ZOO[name].eps)


@pytest.mark.parametrize("name", ZOO_NAMES)
@pytest.mark.parametrize("norm", sorted(NORMS))
def test_zoo_lipschitz_dominates_sampled_gradient_norms(name, norm):
    _check_lipschitz(name, torch.float64, NORMS[norm], ZOO[name].eps)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_jacobian_bounds_contain_sampled_gradients(name):
    _check_jacobian(name, torch.float64, ZOO[name].eps)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_smooth_certify_runs(name):
    """Cohen et al.'s certificate: a class or abstention, a radius consistent with the
    vote count (radius 0 on abstention, positive when the lower bound on p_A exceeds 1/2)."""
    model, x = zoo_model(name), zoo_input(name)
    cert = lipbound.Smooth(model, ZOO[name].num_outputs, 0.25).certify(
        x, n0=32, n=400, alpha=0.01, seed=0)
    assert -1 <= cert.prediction < ZOO[name].num_outputs
    assert cert.radius >= 0
    if cert.prediction >= 0:
        d = cert.details
        assert d["p_A_lower"] <= d["n_A"] / d["n"] and cert.radius > 0
        assert math.isclose(cert.radius, 0.25 * torch.distributions.Normal(0, 1).icdf(
            torch.tensor(d["p_A_lower"], dtype=torch.float64)).item(), rel_tol=1e-6)
    else:
        assert cert.radius == 0


# ------------------------------------------------------------------------------------- slow

@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_alpha_crown_default_iterations(name):
    _check_outputs(name, torch.float64, "alpha-crown", ZOO[name].eps)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_NAMES)
@pytest.mark.parametrize("method", ["ibp", "alpha-crown"])
def test_zoo_float32_output_bounds(name, method):
    _check_outputs(name, torch.float32, method, ZOO[name].eps, **(
        {"iterations": 3} if method == "alpha-crown" else {}))


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_NAMES)
@pytest.mark.parametrize("norm", sorted(NORMS))
def test_zoo_float32_lipschitz_and_larger_radius(name, norm):
    _check_lipschitz(name, torch.float32, NORMS[norm], ZOO[name].eps)
    _check_lipschitz(name, torch.float64, NORMS[norm], 4 * ZOO[name].eps)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_float32_jacobian_and_larger_radius(name):
    _check_jacobian(name, torch.float32, ZOO[name].eps)
    _check_jacobian(name, torch.float64, 4 * ZOO[name].eps)
