"""The shipped models load in eval mode and reach their stated held-out accuracy / R^2."""

from __future__ import annotations

import pytest
import torch

import lipbound

# name -> (data loader, metric, threshold); the thresholds sit a little below the values the
# training scripts print (see each model's module docstring / registry entry).
THRESHOLDS = {
    "digits-cnn": 0.95,
    "digits-lipschitz": 0.90,
    "mnist1d-cnn": 0.85,
    "diabetes-mlp": 0.34,
    "digits-lipschitz-smooth-0.25": 0.95,
    "digits-lipschitz-smooth-0.5": 0.95,
    "mnist1d-smooth-0.25": 0.68,
    "mnist1d-smooth-0.5": 0.68,
    "mnist1d-lipschitz-smooth-0.25": 0.62,
    "mnist1d-lipschitz-smooth-0.5": 0.62,
}
LIPSCHITZ_SMOOTH = ("digits-lipschitz-smooth-0.25", "digits-lipschitz-smooth-0.5",
                    "mnist1d-lipschitz-smooth-0.25", "mnist1d-lipschitz-smooth-0.5")


def _test_split(name: str):
    if name == "digits-cnn" or name.startswith("digits-lipschitz-smooth"):
        from lipbound.models.digits_smooth import digits_images
        return digits_images()[2:]
    if name == "digits-lipschitz":
        from lipbound.models.digits import digits_data
        return digits_data()[2:]
    if name.startswith("mnist1d"):
        from lipbound.models.mnist1d import mnist1d_data
        return mnist1d_data()[2:]
    from lipbound.models.diabetes import diabetes_data
    return diabetes_data()[2:]


def _score(name: str, model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        out = model(X)
    if name == "diabetes-mlp":
        pred = out[:, 0]
        return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    return float((out.argmax(1) == y).float().mean())


@pytest.mark.parametrize("name", sorted(THRESHOLDS))
def test_shipped_model_loads_and_scores(name):
    assert name in lipbound.models.available()
    info = lipbound.models.info(name)
    model = lipbound.models.load(name)
    assert not any(m.training for m in model.modules())
    X, y = _test_split(name)
    assert tuple(X.shape[1:]) == info.input_shape
    out = model(X[:2])
    assert out.shape == (2, info.num_outputs)
    assert _score(name, model, X, y) >= THRESHOLDS[name]


def test_shipped_weights_are_small():
    from importlib import resources

    for name in THRESHOLDS:
        path = resources.files("lipbound.models") / "weights" / lipbound.models.info(name).weights
        assert path.stat().st_size < 400_000


def test_lipschitz_model_layers_have_spectral_norm_at_most_one():
    model = lipbound.models.load("digits-lipschitz")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3
    for lin in linears:
        assert float(torch.linalg.matrix_norm(lin.weight.detach().double(), ord=2)) <= 1.0


def test_lipschitz_model_is_globally_one_lipschitz_in_l2():
    model = lipbound.models.load("digits-lipschitz").double()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 64, generator=g, dtype=torch.float64)
    d = torch.randn(200, 64, generator=g, dtype=torch.float64) * 0.3
    with torch.no_grad():
        num = (model(x + d) - model(x)).norm(dim=1)
    assert bool((num <= d.norm(dim=1) * (1 + 1e-9)).all())


def test_diabetes_model_weights_satisfy_the_monotone_construction():
    """The shipped weights obey the sign rules of lipbound/models/diabetes.py exactly."""
    from lipbound.models.diabetes import (
        MONOTONE_FEATURES,
        NON_MONOTONE_FEATURE,
        diabetes_box,
        unit_signs,
    )

    model = lipbound.models.load("diabetes-mlp").double()
    w1, w2, w3 = (m.weight.detach() for m in model if isinstance(m, torch.nn.Linear))
    b1 = model[0].bias.detach()
    s = unit_signs().double()
    mono = list(MONOTONE_FEATURES)
    assert bool((s[:, None] * w1[:, mono] >= 0).all())
    assert bool((s[:, None] * s[None, :] * w2 >= 0).all())
    assert bool((s * w3[0] >= 0).all())
    # age only reaches the output through the last two units of each layer: a V-shape
    a, H = NON_MONOTONE_FEATURE, w1.shape[0]
    assert bool((w1[:H - 2, a] == 0).all()) and w1[H - 2, a] == 1 and w1[H - 1, a] == -1
    assert bool((w1[H - 2:, [k for k in range(10) if k != a]] == 0).all())
    assert bool((w2[H - 2:, :H - 2] == 0).all()) and bool((w2[:H - 2, H - 2:] == 0).all())
    assert torch.equal(w2[H - 2:, H - 2:], torch.eye(2, dtype=torch.float64))
    assert float(w3[0, H - 2:].min()) >= 0.05
    lo, hi = diabetes_box()
    knot = float(-b1[H - 2])
    assert float(b1[H - 1]) == knot and float(lo[a]) < knot < float(hi[a])


@pytest.mark.parametrize("name", LIPSCHITZ_SMOOTH)
def test_noise_trained_lipschitz_models_are_one_lipschitz(name):
    """Every layer of spectral norm <= 1 (float64 SVD); the engine's certified margin
    constants are within sqrt(2) and above every sampled gradient norm of every margin."""
    from lipbound.jacobian.global_bound import margin_lipschitz

    model = lipbound.models.load(name).double()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3
    for lin in linears:
        assert float(torch.linalg.matrix_norm(lin.weight.detach().double(), ord=2)) <= 1.0
    shape = lipbound.models.info(name).input_shape
    L = margin_lipschitz(model, torch.zeros(shape, dtype=torch.float64), norm=2)
    assert float(L.max()) <= 2 ** 0.5 + 1e-9
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, *shape, generator=g, dtype=torch.float64).requires_grad_(True)
    out = model(x)
    grads = torch.stack([torch.autograd.grad(out[:, c].sum(), x, retain_graph=True)[0]
                         .flatten(1) for c in range(out.shape[1])], 1)  # [N, K, d]
    norms = (grads[:, :, None] - grads[:, None, :]).norm(dim=3).amax(dim=0)  # [K, K]
    assert bool((norms <= L * (1 + 1e-9)).all())
    assert float((norms / L.clamp(min=1e-12)).max()) > 0.3  # the check is not vacuous
