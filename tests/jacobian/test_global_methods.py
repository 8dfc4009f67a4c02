"""Certified global l_2 bounds beyond the naive product: ECLipsE-Fast (certified), LipSDP
(certified), soft outputs (softmax / sparsemax), the float64 PSD proofs they rest on, and the
cap of local bounds by them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import lipbound
from lipbound.errors import InputError, UnsupportedNormError, UnsupportedOperationError
from lipbound.global_api import global_lipschitz
from lipbound.jacobian.psd import certify_psd, lambda_max_upper


def _mlp(sizes, act, seed, scale=1.0):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.mul_(scale)
        layers += [lin, act()]
    return nn.Sequential(*layers[:-1]).double().eval()


def _cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2),
                         nn.Tanh(), nn.Flatten(), nn.Linear(36, 5)).double().eval()


def _jacobians(model, xs):
    return torch.stack([torch.autograd.functional.jacobian(lambda z: model(z[None])[0], x)
                        .reshape(-1, x.numel()) for x in xs])


def _sampled(model, shape, n=300, seed=0, ascent_steps=0):
    """[n, K, d] Jacobians at random points of several scales, optionally pushed by gradient
    ascent on the Jacobian's spectral norm (a lower bound of every Lipschitz constant)."""
    gen = torch.Generator().manual_seed(seed)
    scales = torch.tensor([0.1, 1.0, 3.0], dtype=torch.float64)
    xs = torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    xs = xs * scales[torch.arange(n) % 3].view(-1, *[1] * len(shape))
    if ascent_steps:
        xs = xs[: n // 4].clone().requires_grad_(True)
        opt = torch.optim.Adam([xs], lr=0.05)
        for _ in range(ascent_steps):
            J = torch.stack([torch.autograd.functional.jacobian(
                lambda z: model(z[None])[0], x, create_graph=True).reshape(-1, x.numel())
                for x in xs])
            loss = -torch.linalg.matrix_norm(J, ord=2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        xs = xs.detach()
    return _jacobians(model, xs)


CASES = [
    ("relu", lambda: _mlp([6, 16, 16, 3], nn.ReLU, 0), (6,)),
    ("tanh", lambda: _mlp([5, 12, 12, 12, 4], nn.Tanh, 1, scale=2.0), (5,)),
    ("sigmoid", lambda: _mlp([4, 10, 10, 3], nn.Sigmoid, 2, scale=3.0), (4,)),
    ("leaky", lambda: _mlp([6, 16, 8, 3], lambda: nn.LeakyReLU(0.1), 3), (6,)),
    ("cnn", lambda: _cnn(4), (1, 8, 8)),
    ("hardtanh", lambda: _mlp([6, 16, 16, 3], nn.Hardtanh, 5, scale=2.0), (6,)),
    ("hardsigmoid", lambda: _mlp([6, 16, 16, 3], nn.Hardsigmoid, 6, scale=4.0), (6,)),
    ("composed", lambda: _composed(8), (1, 8, 8)),
]


def _composed(seed):
    """Consecutive linear ops the tracer keeps apart (convolution then average pooling): the
    chain composes their dense matrices in float64 with an error bound (``err`` > 0)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.AvgPool2d(2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(48, 8), nn.Tanh(),
                         nn.Linear(8, 3)).double().eval()


@pytest.mark.parametrize("name,make,shape", CASES, ids=[c[0] for c in CASES])
def test_eclipse_is_certified_and_below_naive(name, make, shape):
    model = make()
    x = torch.zeros(*shape, dtype=torch.float64)
    J = _sampled(model, shape, n=200, ascent_steps=10 if name in ("tanh", "sigmoid") else 0)
    naive = global_lipschitz(model, x, 2, method="naive")
    ecl = global_lipschitz(model, x, 2, method="eclipse")
    row_norms = torch.linalg.vector_norm(J, dim=2).amax(0)  # [K] sampled row gradients
    assert torch.all(ecl.upper >= row_norms)
    assert ecl.details["vector_l2"] >= float(torch.linalg.matrix_norm(J, ord=2).max())
    # both certified; ECLipsE-Fast never exceeds the product of norms (module docstring)
    assert torch.all(ecl.upper <= naive.upper * (1 + 1e-6))
    assert ecl.details["vector_l2"] <= naive.details["vector_l2"] * (1 + 1e-6)
    fast = global_lipschitz(model, x, 2, method="fast")
    assert torch.equal(fast.upper, torch.minimum(naive.upper, ecl.upper))


def test_eclipse_is_tighter_on_random_mlps():
    """A real gap on every seed of a family (ReLU 20-40-40-40-5)."""
    x = torch.zeros(20, dtype=torch.float64)
    for seed in range(4):
        model = _mlp([20, 40, 40, 40, 5], nn.ReLU, 10 + seed)
        e = global_lipschitz(model, x, 2, method="eclipse").details["vector_l2"]
        n = global_lipschitz(model, x, 2, method="naive").details["vector_l2"]
        J = _sampled(model, (20,), n=200, seed=seed)
        assert float(torch.linalg.matrix_norm(J, ord=2).max()) <= e < 0.9 * n


def test_eclipse_refuses_what_it_does_not_cover():
    x = torch.zeros(6, dtype=torch.float64)
    with pytest.raises(UnsupportedOperationError):  # GELU is not monotone
        global_lipschitz(_mlp([6, 8, 3], nn.GELU, 0), x, 2, method="eclipse")
    with pytest.raises(UnsupportedNormError):
        global_lipschitz(_mlp([6, 8, 3], nn.ReLU, 0), x, math.inf, method="eclipse")
    # 'fast' falls back to the naive product where ECLipsE does not apply
    m = _mlp([6, 8, 3], nn.GELU, 0)
    assert torch.equal(global_lipschitz(m, x, 2, method="fast").upper,
                       global_lipschitz(m, x, 2, method="naive").upper)
    with pytest.raises(InputError):
        global_lipschitz(m, x, 2, method="nope")
    with pytest.raises(InputError):
        global_lipschitz(m, x, 2, output="softmax", temperature=0.0)


def test_eclipse_constant_after_a_zero_layer():
    model = _mlp([4, 6, 6, 2], nn.ReLU, 0)
    with torch.no_grad():
        model[2].weight.zero_()
    g = global_lipschitz(model, torch.zeros(4, dtype=torch.float64), 2, method="eclipse")
    assert torch.all(g.upper == 0)


# ------------------------------------------------------------------ soft outputs
def _soft(z, output, t):
    z = z / t
    if output == "softmax":
        return torch.softmax(z, -1)
    srt, _ = torch.sort(z, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    css = srt.cumsum(-1)
    support = (1 + k * srt) > css
    kk = support.sum(-1, keepdim=True)
    tau = (css.gather(-1, kk - 1) - 1) / kk
    return torch.clamp(z - tau, min=0)


@pytest.mark.parametrize("output", ["softmax", "sparsemax"])
@pytest.mark.parametrize("norm", [2, "inf"])
def test_soft_output_bounds_dominate_sampled_jacobians(output, norm):
    model = _mlp([5, 12, 12, 4], nn.ReLU, 7, scale=2.0)
    x = torch.zeros(5, dtype=torch.float64)
    q = 1.0 if norm == "inf" else 2.0
    spec = torch.tensor([[1.0, -1.0, 0, 0], [0, 0, 1.0, 0]], dtype=torch.float64)
    for t in (0.25, 1.0, 4.0):
        g = global_lipschitz(model, x, norm, spec=spec, method="best" if norm == 2 else "naive",
                             output=output, temperature=t)
        soft = nn.Sequential(model, _Soft(output, t)).eval()
        J = _sampled(soft, (5,), n=120, seed=int(t * 4))
        sampled = torch.linalg.vector_norm(spec @ J, ord=q, dim=2).amax(0)
        assert torch.all(g.upper >= sampled)
        logits = global_lipschitz(model, x, norm, spec=torch.eye(4, dtype=torch.float64))
        factor = 0.5 if output == "softmax" else 1.5  # ||J||_1 bound 2 (1 - 1/K)
        assert float(g.upper.max()) <= float(logits.upper.max()) * 2 * factor / t * 1.001


class _Soft(nn.Module):
    def __init__(self, output, t):
        super().__init__()
        self.output, self.t = output, t

    def forward(self, z):
        return _soft(z, self.output, self.t)


def test_softmax_jacobian_norm_bound_is_tight():
    """||diag(p) - p p^T||_2 and its largest absolute row sum are <= 1/2 on the simplex, with
    equality at p = (1/2, 1/2, 0): the factor 1/(2t) cannot be lowered."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        p = torch.softmax(3 * torch.randn(5, generator=gen, dtype=torch.float64), 0)
        J = torch.diag(p) - torch.outer(p, p)
        assert float(torch.linalg.matrix_norm(J, ord=2)) <= 0.5
        assert float(J.abs().sum(1).max()) <= 0.5
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    J = torch.diag(p) - torch.outer(p, p)
    assert float(torch.linalg.matrix_norm(J, ord=2)) == pytest.approx(0.5)


# ------------------------------------------------------------------ PSD certificates
def test_psd_certificate_rejects_indefinite_and_accepts_definite():
    rng = np.random.default_rng(0)
    for n in (3, 40, 150):
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        ev = np.linspace(1e-3, 2.0, n)
        for lo, expect in ((1e-3, True), (-1e-9, False), (-1e-3, False)):
            ev[0] = lo
            a = (q * ev) @ q.T
            a = (a + a.T) / 2
            assert certify_psd(a) is expect
        # an error allowance larger than the smallest eigenvalue must defeat the proof
        ev[0] = 1e-3
        a = (q * ev) @ q.T
        a = (a + a.T) / 2
        assert not certify_psd(a, err=2e-3)
        assert certify_psd(a, err=1e-4)


def test_lambda_max_upper_is_above_and_close():
    rng = np.random.default_rng(1)
    for n in (2, 30, 200):
        for scale in (1e-20, 1.0, 1e20):
            a = rng.standard_normal((n, n)) * scale
            a = (a + a.T) / 2
            lam = float(np.linalg.eigvalsh(a)[-1])
            up_ = lambda_max_upper(a)
            assert up_ >= lam + abs(lam) * 1e-14
            assert up_ <= lam + 1e-7 * abs(a).max()
            assert lambda_max_upper(a, err=1e-3 * scale) >= lam + 1e-3 * scale


# ------------------------------------------------------------------ LipSDP, best
def test_lipsdp_is_certified_and_best_is_least():
    model = _mlp([6, 12, 12, 3], nn.ReLU, 5)
    x = torch.zeros(6, dtype=torch.float64)
    J = _sampled(model, (6,), n=300)
    sampled = float(torch.linalg.matrix_norm(J, ord=2).max())
    sdp = global_lipschitz(model, x, 2, method="lipsdp")
    ecl = global_lipschitz(model, x, 2, method="eclipse")
    naive = global_lipschitz(model, x, 2, method="naive")
    best = global_lipschitz(model, x, 2, method="best")
    v = sdp.details["vector_l2"]
    assert sampled <= v <= ecl.details["vector_l2"] * (1 + 1e-6)
    assert v <= naive.details["vector_l2"]
    assert torch.all(best.upper <= torch.minimum(naive.upper, ecl.upper))
    assert torch.all(best.upper >= torch.linalg.vector_norm(J, dim=2).amax(0))


# ------------------------------------------------------------------ the issue's case
def test_local_crown_is_capped_by_eclipse_on_the_issue_mlp():
    """64-128-128-128-10 ReLU MLP, l_2, eps = 1: CROWN's local bound is far above every
    global one; the cap now uses certified ECLipsE-Fast (below the naive product)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                          nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    x = torch.rand(64)
    naive = global_lipschitz(model, x, 2, method="naive")
    ecl = global_lipschitz(model, x, 2, method="eclipse")
    assert torch.all(ecl.upper < 0.7 * naive.upper)
    r = lipbound.local_lipschitz(model, x, 1.0, norm=2, method="crown")
    assert r.details["bound_source"] == ["global"] * 10
    assert torch.all(r.upper <= ecl.upper.to(r.upper.dtype))
    assert torch.all(r.lower <= r.upper)


@pytest.mark.parametrize("output,attained", [("softmax", 0.5 * math.sqrt(2)),
                                             ("sparsemax", math.sqrt(2))])
def test_soft_output_factor_is_tight_on_the_identity(output, attained):
    """f = identity on R^2, row p_1 - p_2 at x = 0: the gradient norm is sqrt(2)/(2t)
    (softmax) or sqrt(2)/t (sparsemax), which the bound must reach and not exceed much."""
    lin = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.eye(2))
    model = nn.Sequential(lin).eval()
    spec = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    for t in (0.5, 2.0):
        g = global_lipschitz(model, torch.zeros(2, dtype=torch.float64), 2, spec=spec,
                             method="best", output=output, temperature=t)
        J = torch.autograd.functional.jacobian(
            lambda z, t=t: spec @ _soft(model(z[None])[0], output, t),
            torch.zeros(2, dtype=torch.float64))
        assert float(torch.linalg.vector_norm(J)) == pytest.approx(attained / t)
        assert attained / t <= float(g.upper[0]) <= attained / t * (1 + 1e-9)


def test_eclipse_is_exact_where_the_product_is_attained():
    """Rank-one positive layers: every ReLU is active at x0 > 0 and the Jacobian there has
    norm prod ||W_i||, so the true constant equals the naive product and ECLipsE (between the
    two) must match it to rounding: an under-estimate by any factor fails here."""
    gen = torch.Generator().manual_seed(3)
    v, u, u2 = (torch.rand(n, generator=gen, dtype=torch.float64) + 0.1 for n in (5, 7, 6))
    w = torch.rand(3, generator=gen, dtype=torch.float64) + 0.1
    layers = [nn.Linear(5, 7, bias=False), nn.ReLU(), nn.Linear(7, 6, bias=False), nn.ReLU(),
              nn.Linear(6, 3, bias=False)]
    model = nn.Sequential(*layers).double().eval()
    with torch.no_grad():
        layers[0].weight.copy_(torch.outer(u, v))
        layers[2].weight.copy_(torch.outer(u2, u))
        layers[4].weight.copy_(torch.outer(w, u2))
    J = torch.autograd.functional.jacobian(lambda z: model(z[None])[0], v)
    g = global_lipschitz(model, v, 2, method="eclipse")
    attained = torch.linalg.vector_norm(J, dim=1)
    assert torch.all(attained <= g.upper)
    assert torch.all(g.upper <= attained * (1 + 1e-6))
    vec = float(torch.linalg.matrix_norm(J, ord=2))
    assert vec <= g.details["vector_l2"] <= vec * (1 + 1e-6)
    sdp = global_lipschitz(model, v, 2, method="lipsdp").details["vector_l2"]
    assert vec <= sdp <= vec * 1.01


# ------------------------------------------------------------------ shipped models
def _shipped():
    from lipbound.models import registry

    return registry.available()


@pytest.mark.parametrize("name", _shipped())
def test_global_bounds_dominate_gradients_of_shipped_models(name):
    """Every shipped model: the 'fast' bound (naive, or ECLipsE where it is tighter) is above
    the row gradient norms at sampled points (digit-like inputs and Gaussian noise) and never
    above the naive product."""
    from lipbound.models import registry

    info = registry.info(name)
    model = registry.load(name).double()
    x = torch.zeros(*info.input_shape, dtype=torch.float64)
    try:
        naive = global_lipschitz(model, x, 2, method="naive")
    except UnsupportedOperationError:
        pytest.skip(f"{name}: no global Lipschitz fact for some op")
    fast = global_lipschitz(model, x, 2, method="fast")
    assert torch.all(fast.upper <= naive.upper)
    gen = torch.Generator().manual_seed(0)
    xs = torch.rand(24, *info.input_shape, generator=gen, dtype=torch.float64)
    xs = torch.cat([xs, xs + 0.5 * torch.randn(xs.shape, generator=gen, dtype=torch.float64)])
    J = _jacobians(model, xs)
    assert torch.all(torch.linalg.vector_norm(J, dim=2).amax(0) <= fast.upper)
    assert float(torch.linalg.matrix_norm(J, ord=2).max()) <= fast.details["vector_l2"]
