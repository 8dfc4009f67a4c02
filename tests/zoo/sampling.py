"""Points of l_p balls and float64 autograd gradients, for the zoo's containment tests."""

from __future__ import annotations

import math

import torch
from torch import nn


def ball_points(x: torch.Tensor, eps: float, p: float, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` flat float64 points [n, x.numel()] of ``{x' : ||x' - x||_p <= eps}``: the
    centre, points spread through the ball and (l_inf) vertices / (l_2) sphere points /
    (l_1) signed axis tips."""
    g = torch.Generator().manual_seed(seed)
    d = x.numel()
    x = x.double().reshape(1, -1)
    m = n - 1
    if p == math.inf:
        u = torch.rand(m, d, generator=g, dtype=torch.float64) * 2 - 1
        u[m // 2:] = u[m // 2:].sign()  # vertices
    elif p == 2:
        u = torch.randn(m, d, generator=g, dtype=torch.float64)
        u = u / u.norm(dim=1, keepdim=True)
        r = torch.rand(m, 1, generator=g, dtype=torch.float64) ** (1.0 / d)
        u = u * torch.where(torch.arange(m).unsqueeze(1) < m // 2, r, torch.ones_like(r))
    elif p == 1:
        u = torch.empty(m, d, dtype=torch.float64).exponential_(generator=g)
        u = u * (torch.randint(0, 2, (m, d), generator=g) * 2 - 1)
        u = u / u.abs().sum(dim=1, keepdim=True)
        k = m - m // 2  # signed axis tips, the l_1 ball's vertices
        tips = torch.zeros(k, d, dtype=torch.float64)
        tips[torch.arange(k), torch.randint(0, d, (k,), generator=g)] = \
            (torch.randint(0, 2, (k,), generator=g) * 2 - 1).double()
        u[m // 2:] = tips
    else:
        raise ValueError(p)
    return torch.cat([x, x + eps * u])


def outputs_and_gradients(model64: nn.Module, pts: torch.Tensor, shape: tuple[int, ...]
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs [n, K], gradients [K, n, *shape]) of a float64 model at flat points."""
    p = pts.reshape(-1, *shape).clone().requires_grad_(True)
    y = model64(p)
    grads = torch.stack([torch.autograd.grad(y[:, k].sum(), p, retain_graph=True)[0]
                         for k in range(y.shape[1])])
    return y.detach(), grads
