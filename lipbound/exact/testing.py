"""Helpers for tests of any bound against the exact baselines: random MLPs, points sampled in B,
sampled lower bounds from autograd, and exact (tightest sound) pre-activation bounds of tiny nets.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import nn

from lipbound.exact.domain import (
    UNSTABLE,
    InputBall,
    RegionLP,
    interval_bounds,
    make_ball,
    stability,
)
from lipbound.exact.mlp import MLP
from lipbound.norms import dual_norm


def random_sequential(sizes, seed: int, negative_slope: float = 0.0,
                      weight_std: float | None = None) -> nn.Sequential:
    """nn.Sequential(Linear, act, ..., Linear) with PyTorch's default init under ``seed``
    (or N(0, weight_std^2) weights and biases), float32, eval mode."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        if weight_std is not None:
            with torch.no_grad():
                lin.weight.normal_(0.0, weight_std)
                lin.bias.normal_(0.0, weight_std)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU() if negative_slope == 0.0 else nn.LeakyReLU(negative_slope))
    return nn.Sequential(*layers).eval()


def random_mlp(sizes, seed: int, negative_slope: float = 0.0,
               weight_std: float | None = None) -> MLP:
    return MLP.from_sequential(random_sequential(sizes, seed, negative_slope, weight_std))


def sample_ball(ball: InputBall, n: int, seed: int = 0) -> np.ndarray:
    """n points of B (rows): half inside, half on the ball's surface (corners of the box for
    p = inf, vertices of the l1 ball for p = 1 among them), then moved into the data range."""
    rng = np.random.default_rng(seed)
    d = ball.n
    pts = []
    for i in range(n):
        if ball.p == math.inf:
            u = rng.uniform(-1, 1, d) if i % 2 == 0 else rng.choice([-1.0, 1.0], d)
            x = ball.x0 + ball.eps * u
        else:
            g = rng.standard_normal(d)
            if ball.p == 1.0:
                g = rng.exponential(1.0, d) * rng.choice([-1.0, 1.0], d)
                if i % 3 == 0:  # vertices of the l1 ball
                    g = np.zeros(d)
                    g[rng.integers(d)] = rng.choice([-1.0, 1.0])
            nrm = np.linalg.norm(g, ord=ball.p)
            r = 1.0 if i % 2 else rng.uniform(0, 1) ** (1.0 / d)
            x = ball.x0 + ball.eps * r * g / max(nrm, 1e-300)
        pts.append(ball.pull_inside(x))
    return np.array(pts)


def sampled_gradient_norms(model: nn.Module, points: np.ndarray, c: np.ndarray, q: float):
    """Dual norms of autograd gradients of c . model at the given points (float64)."""
    m = model.to(torch.float64)
    x = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    out = m(x) @ torch.as_tensor(c, dtype=torch.float64)
    (g,) = torch.autograd.grad(out.sum(), x)
    return torch.linalg.vector_norm(g, ord=q, dim=1).numpy()


def sampled_lower(mlp: MLP, x0, eps, p, c=None, data_range=None, n: int = 2000,
                  seed: int = 0) -> float:
    """max over sampled points of B of ||grad (c . f)||_q by autograd (a lower bound on L)."""
    ball = make_ball(mlp, x0, eps, p, data_range)
    pts = sample_ball(ball, n, seed)
    return float(np.max(sampled_gradient_norms(mlp.to_sequential(), pts, mlp.spec_row(c),
                                               dual_norm(ball.p))))


def exact_preact_bounds(mlp: MLP, x0, eps, p, data_range=None, max_unstable: int = 14):
    """The tightest sound pre-activation bounds (min and max of every z_i over B), by
    enumerating the activation patterns of the earlier layers (LP per region).  Tiny nets only."""
    ball = make_ball(mlp, x0, eps, p, data_range)
    st = stability(interval_bounds(mlp, ball))
    lp = RegionLP(ball)
    n = mlp.in_features
    out = []
    for layer in range(mlp.num_hidden_layers):
        unst = [(i, j) for i in range(layer) for j in np.flatnonzero(st[i] == UNSTABLE)]
        if len(unst) > max_unstable:
            raise ValueError("too many unstable neurons for exact bounds")
        lo = np.full(mlp.hidden_sizes[layer], np.inf)
        hi = np.full(mlp.hidden_sizes[layer], -np.inf)
        for choice in itertools.product([True, False], repeat=len(unst)):
            pat = [st[i] > 0 for i in range(layer)]
            pat = [p_.copy() for p_ in pat]
            for (i, j), v in zip(unst, choice):
                pat[i][j] = v
            # region constraints of the earlier layers and the affine map of layer `layer`
            A, cv = np.eye(n), np.zeros(n)
            Gs, gs = [], []
            for i in range(layer + 1):
                A = mlp.weights[i] @ A
                cv = mlp.weights[i] @ cv + mlp.biases[i]
                if i == layer:
                    break
                sgn = np.where(pat[i], 1.0, -1.0)
                Gs.append(sgn[:, None] * A)
                gs.append(sgn * cv)
                dlt = np.where(pat[i], 1.0, mlp.negative_slopes[i])
                A, cv = dlt[:, None] * A, dlt * cv
            G = np.vstack(Gs) if Gs else np.zeros((0, n))
            g = np.concatenate(gs) if gs else np.zeros(0)
            for j in range(A.shape[0]):
                r = lp.optimize(A[j], G, g, maximize=False)
                if r is None:
                    break  # region empty
                lo[j] = min(lo[j], r[0] + cv[j])
                hi[j] = max(hi[j], lp.optimize(A[j], G, g, maximize=True)[0] + cv[j])
        pad = 1e-9 * (1 + np.abs(lo) + np.abs(hi))  # LP tolerance: stay sound
        out.append((torch.from_numpy(lo - pad), torch.from_numpy(hi + pad)))
    return out
