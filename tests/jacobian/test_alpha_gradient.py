"""alpha-CROWN on Jacobian graphs: the gradient-element bounds it optimises (only those that
can change the norm node's relaxation) stay inside CROWN's and contain sampled gradients; the
norm bound is never looser than CROWN's and never below sampled gradient norms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lipbound
from lipbound.bounds.domains import make_domain, vector_norm
from lipbound.graph.trace import trace
from lipbound.jacobian.bound import jacobian_state
from lipbound.propagate.intermediate import node_rows

DT = torch.float64
Q = {math.inf: 1.0, 2: 2.0, 1: math.inf}


def _cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16, 3)).eval()


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(),
                         nn.Linear(8, 3)).eval()


CASES = [("cnn", _cnn, (1, 1, 8, 8), 0.15), ("mlp", _mlp, (1, 6), 0.3)]


def _sampled_norms(model: nn.Module, x: torch.Tensor, eps: float, norm: float,
                   n: int = 400) -> torch.Tensor:
    """Max over sampled points (with the centre) of ||grad f_s||_q per output s."""
    dom = make_domain(x.to(DT), eps, norm)
    pts = torch.cat([x.to(DT), dom.sample(n, torch.Generator().manual_seed(1))[:, 0]])
    pts.requires_grad_(True)
    y = model.to(DT)(pts)
    out = [vector_norm(torch.autograd.grad(y[:, s].sum(), pts, retain_graph=True)[0]
                       .flatten(1), Q[norm]).max() for s in range(y.shape[1])]
    model.float()
    return torch.stack(out)


@pytest.mark.parametrize("norm", [math.inf, 2, 1])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name,make,shape,eps", CASES, ids=[c[0] for c in CASES])
def test_alpha_crown_norm_bound_between_samples_and_crown(name, make, shape, eps, seed, norm):
    model = make(seed)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    ups = {m: lipbound.local_lipschitz(model, x, eps, norm=norm, method=m, n_samples=1).upper
           for m in ("crown", "alpha-crown")}
    assert (ups["alpha-crown"] <= ups["crown"]).all(), ups
    sampled = _sampled_norms(model, x, eps, norm)
    assert (ups["alpha-crown"] >= sampled * (1 - 1e-9)).all(), (ups, sampled)


def test_alpha_gradient_bounds_inside_crown_and_contain_samples():
    """Per element the optimised bounds lie inside CROWN's (up to summation-order rounding:
    the same relaxations, summed in other chunks), the elements that cannot change the |g_i|
    relaxation (sign-stable under CROWN) keep CROWN's bounds, optimising pays on the family,
    and every sampled gradient lies inside."""
    gained = 0.0
    for seed in range(3):
        model = _cnn(seed)
        x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=DT)
        graph = trace(model, x.float())
        C = torch.eye(3, dtype=DT)
        dom = make_domain(x, 0.08, math.inf)
        with torch.no_grad():
            crown, jg = jacobian_state(graph, C, dom, "crown", 1.0)
            alpha, _ = jacobian_state(graph, C, dom, "alpha-crown", 1.0)
        gc, ga = crown.interval(jg.gradient), alpha.interval(jg.gradient)
        tol = 1e-12
        assert (ga.lower >= gc.lower - tol).all() and (ga.upper <= gc.upper + tol).all()
        rows = node_rows(crown, jg.gradient)
        assert rows is not None and 0 < rows.numel() < gc.lower[0].numel()
        keep = torch.ones(gc.lower[0].numel(), dtype=torch.bool)
        keep[rows] = False
        for a, c in ((ga.lower, gc.lower), (ga.upper, gc.upper)):
            assert torch.allclose(a.flatten(1)[:, keep], c.flatten(1)[:, keep], rtol=0,
                                  atol=tol)
        gained += float((gc.upper - gc.lower).sum() - (ga.upper - ga.lower).sum())
        pts = torch.cat([x, dom.sample(300, torch.Generator().manual_seed(2))[:, 0]])
        pts.requires_grad_(True)
        y = model.to(DT)(pts)
        grads = [torch.autograd.grad(y[:, s].sum(), pts, retain_graph=True)[0]
                 for s in range(3)]
        model.float()
        for s, g in enumerate(grads):
            slack = 1e-9 * (1 + g.abs())
            assert (g >= ga.lower[s] - slack).all() and (g <= ga.upper[s] + slack).all()
    assert gained > 1e-6  # the optimised elements got tighter somewhere
