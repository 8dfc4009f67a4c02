"""Input domains (lipbound.bounds.domains): LpBall and Box intervals, concretisation of linear
functions (compared with their true maxima), sampling, membership, batch selection, and the
norm helpers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lipbound.bounds.domains import (
    Box,
    LpBall,
    dual_norm,
    make_domain,
    parse_norm,
    vector_norm,
)
from lipbound.errors import InputError, UnsupportedNormError

pytestmark = pytest.mark.usefixtures("one_thread")

D = torch.float64
P = [math.inf, 2.0, 1.0]
IN = (2, 3)  # per-sample shape (multi-dimensional on purpose)
N = 6


def _ball(p, gen, clip=False, B=3) -> LpBall:
    center = torch.rand(B, *IN, generator=gen, dtype=torch.float64)
    eps = torch.tensor([0.3, 0.05, 0.7], dtype=torch.float64)[:B]
    rng = (0.0, 1.0) if clip else None
    return make_domain(center, eps, p, rng)


def _box(gen, B=3) -> Box:
    lo = torch.randn(B, *IN, generator=gen, dtype=torch.float64)
    return Box(lo, lo + torch.rand(B, *IN, generator=gen, dtype=torch.float64))


def _corners(lo, hi):
    """All 2^n corners of the box [lo, hi] (flat, n small): [2^n, n]."""
    n = lo.numel()
    bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=lo.dtype)
    return lo.flatten() + bits * (hi - lo).flatten()


# ------------------------------------------------------------------ norms
@pytest.mark.parametrize("spec, p", [
    ("inf", math.inf), ("linf", math.inf), ("L_INF", math.inf), (math.inf, math.inf),
    (float("inf"), math.inf), (2, 2.0), (2.0, 2.0), ("2", 2.0), ("l2", 2.0), (" l_2 ", 2.0),
    (1, 1.0), ("1", 1.0), ("l1", 1.0),
])
def test_parse_norm_accepts(spec, p):
    assert parse_norm(spec) == p and isinstance(parse_norm(spec), float)


@pytest.mark.parametrize("spec", [3, 0, -1, 1.5, "3", "l3", "max", "", None, True, [2],
                                  float("nan"), -math.inf])
def test_parse_norm_rejects(spec):
    with pytest.raises(UnsupportedNormError, match="unsupported norm"):
        parse_norm(spec)
    with pytest.raises(UnsupportedNormError):
        dual_norm(spec)


def test_dual_norm_pairs_and_hoelder(gen):
    assert dual_norm(math.inf) == 1.0 and dual_norm("inf") == 1.0
    assert dual_norm(2) == 2.0
    assert dual_norm(1) == math.inf and dual_norm("l1") == math.inf
    # Hoelder is tight: sup_{||x||_p <= 1} <a, x> = ||a||_q
    a = torch.randn(5, generator=gen, dtype=torch.float64)
    x = {math.inf: a.sign(), 2.0: a / a.norm(), 1.0: torch.zeros(5, dtype=D)}
    x[1.0][a.abs().argmax()] = a[a.abs().argmax()].sign()
    for p, xp in x.items():
        assert vector_norm(xp, p) <= 1 + 1e-15
        torch.testing.assert_close(a @ xp, vector_norm(a, dual_norm(p)), rtol=1e-14, atol=0)


# ------------------------------------------------------------------ LpBall
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("p", P)
def test_interval_is_the_tightest_box(p, clip, gen):
    dom = _ball(p, gen, clip)
    iv = dom.interval()
    e = dom.eps.reshape(-1, 1, 1)
    lo, hi = dom.center - e, dom.center + e
    if clip:
        lo, hi = lo.clamp(min=0.0), hi.clamp(max=1.0)
    assert torch.equal(iv.lower, lo) and torch.equal(iv.upper, hi)
    # every bound is attained by a point of the domain: the center moved along one axis
    n = math.prod(IN)
    for j in range(n):
        for bound in (iv.lower, iv.upper):
            x = dom.center.flatten(1).clone()
            x[:, j] = bound.flatten(1)[:, j]
            assert dom.contains(x.reshape(dom.center.shape)).all()
    # and sampled points respect it
    pts = dom.sample(500, gen)
    assert ((pts >= iv.lower) & (pts <= iv.upper)).all()


def _true_max_unclipped(dom: LpBall, A, bias):
    """max of <A, x> + bias over the (unclipped) ball, and a maximiser: [B, S], [B, S, n]."""
    c = dom.center.flatten(1).unsqueeze(1)
    e = dom.eps.reshape(-1, 1, 1)
    if dom.p == math.inf:
        d = A.sign()
    elif dom.p == 2.0:
        d = A / A.norm(dim=-1, keepdim=True)
    else:
        d = torch.zeros_like(A)
        j = A.abs().argmax(-1, keepdim=True)
        d.scatter_(-1, j, A.gather(-1, j).sign())
    x = c + e * d
    return (A * x).sum(-1) + bias, x


@pytest.mark.parametrize("p", P)
def test_concretize_upper_is_the_true_max_over_the_ball(p, gen):
    dom = _ball(p, gen)
    B, S = dom.batch_size, 4
    A = torch.randn(B, S, *IN, generator=gen, dtype=torch.float64)
    bias = torch.randn(B, S, generator=gen, dtype=torch.float64)
    up = dom.concretize_upper(A, bias)
    assert up.shape == (B, S)
    want, xstar = _true_max_unclipped(dom, A.flatten(2), bias)
    torch.testing.assert_close(up, want, rtol=1e-13, atol=1e-13)
    # the maximiser lies in the ball (so the bound is attained, not just an upper bound)
    for s in range(S):
        assert dom.contains(xstar[:, s].reshape(B, *IN)).all()
    # closed forms
    c = (A.flatten(2) * dom.center.flatten(1).unsqueeze(1)).sum(-1) + bias
    q = dual_norm(p)
    norm = A.flatten(2).abs().sum(-1) if q == 1.0 else (
        A.flatten(2).norm(dim=-1) if q == 2.0 else A.flatten(2).abs().amax(-1))
    torch.testing.assert_close(up, c + dom.eps.reshape(-1, 1) * norm, rtol=1e-13, atol=1e-13)
    # and no sampled point exceeds it
    pts = dom.sample(2000, gen).flatten(2)  # [n, B, in]
    vals = torch.einsum("bsi,nbi->nbs", A.flatten(2), pts) + bias
    assert (vals <= up + 1e-12).all()


def test_concretize_upper_linf_clipped_is_the_corner_max(gen):
    dom = _ball(math.inf, gen, clip=True)
    A = torch.randn(dom.batch_size, 3, *IN, generator=gen, dtype=torch.float64)
    bias = torch.zeros(dom.batch_size, 3, dtype=torch.float64)
    up = dom.concretize_upper(A, bias)
    iv = dom.interval()
    for b in range(dom.batch_size):
        corners = _corners(iv.lower[b], iv.upper[b])
        assert dom.select(torch.tensor([b])).contains(corners.reshape(-1, 1, *IN)).all()
        best = (corners @ A[b].flatten(1).T).amax(0)
        torch.testing.assert_close(up[b], best, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("p", [2.0, 1.0])
def test_concretize_upper_clipped_ball_is_sound_and_no_worse(p, gen):
    dom = _ball(p, gen, clip=True)
    unclipped = LpBall(dom.center, dom.eps, p)
    A = torch.randn(dom.batch_size, 5, *IN, generator=gen, dtype=torch.float64)
    bias = torch.randn(dom.batch_size, 5, generator=gen, dtype=torch.float64)
    up = dom.concretize_upper(A, bias)
    iv = dom.interval()
    box = Box(iv.lower, iv.upper)
    assert (up <= unclipped.concretize_upper(A, bias) + 1e-13).all()
    assert (up <= box.concretize_upper(A, bias) + 1e-13).all()
    pts = dom.sample(3000, gen)
    assert dom.contains(pts).all()
    vals = torch.einsum("bsi,nbi->nbs", A.flatten(2), pts.flatten(2)) + bias
    assert (vals <= up + 1e-12).all()


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("p", P)
def test_samples_lie_inside_and_fill_the_ball(p, clip, gen):
    dom = _ball(p, gen, clip)
    pts = dom.sample(N * 500, gen)
    assert pts.shape == (N * 500, dom.batch_size, *IN) and pts.dtype == torch.float64
    assert dom.contains(pts).all()
    if clip:
        assert (pts >= 0).all() and (pts <= 1).all()
        return
    # uniform in the ball: E ||x - c||_p / eps = n / (n + 1) (l_2 and l_1, dimension n);
    # for l_inf every coordinate is uniform on [-eps, eps]: E |x_j - c_j| / eps = 1 / 2
    r = vector_norm((pts - dom.center).flatten(2), p) / dom.eps
    n = math.prod(IN)
    if p == math.inf:
        mean = ((pts - dom.center).abs() / dom.eps.reshape(-1, 1, 1)).mean((0, 2, 3))
        torch.testing.assert_close(mean, torch.full_like(mean, 0.5), atol=0.02, rtol=0)
    else:
        torch.testing.assert_close(r.mean(0), torch.full((3,), n / (n + 1), dtype=D),
                                   atol=0.02, rtol=0)
    assert (r.amax(0) > 0.97).all()


def test_sampling_is_seeded(gen):
    dom = _ball(2.0, gen)
    a = dom.sample(10, torch.Generator().manual_seed(5))
    b = dom.sample(10, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("p", P)
def test_contains_rejects_outside_points(p, gen):
    dom = _ball(p, gen, clip=True)
    c = dom.center
    inside = c.clone()
    assert dom.contains(inside).all()
    # 1.01 eps along one axis towards the middle of the data range: outside the ball
    step = torch.zeros_like(c)
    step[:, 0, 0] = torch.where(c[:, 0, 0] < 0.5, 1.0, -1.0) * dom.eps * 1.01
    assert not dom.contains(c + step).any()
    # just outside the data range (eps large enough to reach it): outside the domain
    wide = LpBall(torch.full((1, *IN), 0.99, dtype=D), torch.tensor([0.5], dtype=D), p,
                  torch.zeros(1, *IN, dtype=D), torch.ones(1, *IN, dtype=D))
    x = wide.center.clone()
    x[0, 1, 2] = 1.001
    assert not wide.contains(x).any()
    assert LpBall(wide.center, wide.eps, p).contains(x).all()
    # batched: contains answers per batch entry
    mixed = torch.stack([c, c + step])  # [2, B, *IN]
    assert dom.contains(mixed).tolist() == [[True] * 3, [False] * 3]


@pytest.mark.parametrize("shared", [True, False])
def test_select_picks_batch_rows(shared, gen):
    center = torch.rand(4, *IN, generator=gen, dtype=torch.float64)
    eps = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    if shared:
        lo, hi = torch.zeros(1, *IN, dtype=D), torch.ones(1, *IN, dtype=D)
    else:
        lo = center - torch.rand(4, *IN, generator=gen, dtype=torch.float64) * 0.1
        hi = center + torch.rand(4, *IN, generator=gen, dtype=torch.float64) * 0.1
    dom = LpBall(center, eps, 2.0, lo, hi)
    idx = torch.tensor([2, 0, 2])
    sub = dom.select(idx)
    assert sub.batch_size == 3 and sub.in_shape == IN and sub.p == 2.0
    assert torch.equal(sub.center, center[idx]) and torch.equal(sub.eps, eps[idx])
    assert torch.equal(sub.data_lower, lo if shared else lo[idx])
    assert torch.equal(sub.data_upper, hi if shared else hi[idx])
    iv, siv = dom.interval(), sub.interval()
    assert torch.equal(siv.lower, iv.lower[idx]) and torch.equal(siv.upper, iv.upper[idx])
    A = torch.randn(4, 2, *IN, generator=gen, dtype=torch.float64)
    bias = torch.zeros(4, 2, dtype=torch.float64)
    torch.testing.assert_close(sub.concretize_upper(A[idx], bias[idx]),
                               dom.concretize_upper(A, bias)[idx], rtol=0, atol=0)


@pytest.mark.parametrize("bounds", ["scalar", "per_sample"])
def test_select_with_data_bounds_without_batch_dim(bounds, gen):
    """Data bounds only need to broadcast to the center: a 0-d tensor or [*in] (no batch
    dimension) applies to every row and must survive select unchanged."""
    center = torch.rand(3, 3, generator=gen, dtype=torch.float64) * 0.5 + 0.25
    if bounds == "scalar":
        lo, hi = torch.tensor(0.0, dtype=D), torch.tensor(1.0, dtype=D)
    else:
        lo, hi = torch.tensor([0.0, 0.2, 0.1], dtype=D), torch.tensor([1.0, 0.8, 0.9], dtype=D)
    dom = LpBall(center, torch.full((3,), 0.4, dtype=D), math.inf, lo, hi)
    idx = torch.tensor([2, 0, 1])
    sub = dom.select(idx)
    iv, siv = dom.interval(), sub.interval()
    assert torch.equal(siv.lower, iv.lower[idx]) and torch.equal(siv.upper, iv.upper[idx])


def test_make_domain_validates(gen):
    x = torch.rand(2, *IN, generator=gen, dtype=torch.float64)
    dom = make_domain(x, 0.1, "l2", (0.0, 1.0))
    assert dom.p == 2.0 and dom.eps.tolist() == [0.1, 0.1]
    assert dom.data_lower.shape == (1, *IN)
    assert make_domain(x, torch.tensor([0.1, 0.2], dtype=D), 1).eps.tolist() == [0.1, 0.2]
    bad_x = x.clone()
    bad_x[0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        make_domain(bad_x, 0.1, 2)
    for eps in (-0.1, float("inf"), float("nan")):
        with pytest.raises(InputError, match="eps"):
            make_domain(x, eps, 2)
    with pytest.raises(InputError, match="entries"):
        make_domain(x, torch.tensor([0.1, 0.2, 0.3]), 2)
    with pytest.raises(UnsupportedNormError):
        make_domain(x, 0.1, 3)
    with pytest.raises(InputError, match="outside"):
        make_domain(x + 2, 0.1, 2, (0.0, 1.0))
    with pytest.raises(InputError, match="exceeds"):
        make_domain(x, 0.1, 2, (1.0, 0.0))
    with pytest.raises(InputError, match="pair"):
        make_domain(x, 0.1, 2, (0.0,))
    with pytest.raises(InputError, match="broadcast"):
        make_domain(x, 0.1, 2, (torch.zeros(5), torch.ones(5)))


# ------------------------------------------------------------------ Box
def test_box_interval_concretize_sample_contains_select(gen):
    box = _box(gen)
    assert box.in_shape == IN and box.batch_size == 3
    iv = box.interval()
    assert iv.lower is box.lower and iv.upper is box.upper
    A = torch.randn(3, 4, *IN, generator=gen, dtype=torch.float64)
    bias = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    up = box.concretize_upper(A, bias)
    for b in range(3):
        corners = _corners(box.lower[b], box.upper[b])  # 64 corners
        best = (corners @ A[b].flatten(1).T).amax(0) + bias[b]
        torch.testing.assert_close(up[b], best, rtol=1e-13, atol=1e-13)
    pts = box.sample(1000, gen)
    assert pts.shape == (1000, 3, *IN)
    assert box.contains(pts).all()
    assert ((pts >= box.lower) & (pts <= box.upper)).all()
    vals = torch.einsum("bsi,nbi->nbs", A.flatten(2), pts.flatten(2)) + bias
    assert (vals <= up + 1e-12).all()
    # samples spread over the box (uniform: mean near the middle)
    mid = (box.lower + box.upper) / 2
    rel = (pts.mean(0) - mid) / (box.upper - box.lower)
    assert rel.abs().max() < 0.1
    outside = box.upper.clone()
    outside[:, 0, 1] += 1e-6
    assert not box.contains(outside).any()
    assert box.contains(box.lower).all() and box.contains(box.upper).all()
    idx = torch.tensor([1, 1, 0])
    sub = box.select(idx)
    assert torch.equal(sub.lower, box.lower[idx]) and torch.equal(sub.upper, box.upper[idx])
