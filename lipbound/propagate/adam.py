"""The Adam steps of the alpha optimisation, without ``torch.optim``.

``torch.optim.Adam`` imports ``torch._dynamo`` the first time an optimiser is built (one to
several seconds of the first bound a process computes). :class:`Adam` performs the same
arithmetic as ``torch.optim.Adam(groups, foreach=True)`` with its defaults (betas 0.9 and
0.999, eps 1e-8, no weight decay, no AMSGrad) and an ``ExponentialLR`` schedule, op for op,
so the iterates are the same; parameters whose gradient is None are skipped, as there.
Only tightness depends on these steps: every iterate is a valid relaxation parameter.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Adam:
    """Adam over parameter groups ``[{"params": [...], "lr": float}]`` whose learning rates
    are multiplied by ``gamma`` after each :meth:`step`."""

    def __init__(self, groups: list[dict], gamma: float = 0.95, betas=(0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.groups = [{"params": list(g["params"]), "lr": float(g["lr"])} for g in groups]
        self.gamma, self.betas, self.eps = gamma, betas, eps
        self.state: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def zero_grad(self) -> None:
        for g in self.groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for g in self.groups:
            lr = g["lr"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                if id(p) not in self.state:
                    self.state[id(p)] = (torch.tensor(0.0), torch.zeros_like(p),
                                         torch.zeros_like(p))
                step, exp_avg, exp_avg_sq = self.state[id(p)]
                grad = p.grad
                step.add_(torch.tensor(1.0), alpha=1.0)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2)
                exp_avg_sq.addcmul_(grad, grad, value=1 - beta2)
                n = step.item()
                step_size = (lr / (1 - beta1 ** n)) * -1
                denom = exp_avg_sq.sqrt()
                denom.div_((1 - beta2 ** n) ** 0.5)
                denom.add_(self.eps)
                p.addcdiv_(exp_avg, denom, value=step_size)
            g["lr"] = lr * self.gamma
