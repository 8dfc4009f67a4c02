"""The training loop and the save step shared by the scripts in ``models/`` (seeded by the
caller: the loop draws one ``torch.randperm`` per epoch, so results depend only on the seed)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn


class SpectralBall(nn.Module):
    """Parametrization ``V -> V / max(1, ||V||_2)`` (exact spectral norm at every call)."""

    def forward(self, V: Tensor) -> Tensor:
        return V / torch.clamp(torch.linalg.matrix_norm(V, ord=2), min=1.0)


def project(W: Tensor) -> Tensor:
    """W scaled so that its float64 spectral norm is <= 1 - 1e-6 (a no-op when already less)."""
    W64 = W.double()
    s = float(torch.linalg.matrix_norm(W64, ord=2))
    return (W64 / max(1.0, s / (1 - 1e-6))).float()


def fit_classifier(model: nn.Module, X: Tensor, y: Tensor, opt: torch.optim.Optimizer, *,
                   epochs: int, batch: int, sched=None, logit_scale: float = 1.0) -> None:
    """Mini-batch cross-entropy training on (X, y), shuffled every epoch."""
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        perm = torch.randperm(len(X))
        for i in range(0, len(X), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss_fn(logit_scale * model(X[idx]), y[idx]).backward()
            opt.step()
        if sched is not None:
            sched.step()


def save_classifier(model: nn.Module, X: Tensor, y: Tensor, out: Path, name: str) -> float:
    """Switch to eval mode, print the test accuracy on (X, y) and save the state dict."""
    model.eval()
    with torch.no_grad():
        acc = (model(X).argmax(1) == y).float().mean().item()
    torch.save(model.state_dict(), out)
    print(f"{name} test accuracy {acc:.4f}; saved {out}")
    return acc


def print_accuracies(results: dict[str, object]) -> None:
    """Print the trained models' accuracies as the ``ACCURACY`` dict their module records."""
    print("ACCURACY = {")
    for name, acc in results.items():
        print(f'    "{name}": {acc},')
    print("}")


def fit_noisy(model: nn.Module, forward, xtr: Tensor, ytr: Tensor, sigma: float, epochs: int,
              gen: torch.Generator) -> nn.Module:
    """Gaussian-noise training (sigma) with Adam (lr 3e-3), a cosine schedule and batches of
    64 in an order drawn from ``gen``, which also draws the noise; the loss is the cross
    entropy of ``forward(noisy inputs)`` (the model, or a view / scaling of it)."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * math.ceil(len(xtr) / 64))
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), 64):
            idx = perm[i : i + 64]
            noisy = xtr[idx] + sigma * torch.randn(xtr[idx].shape, generator=gen)
            opt.zero_grad()
            loss_fn(forward(noisy), ytr[idx]).backward()
            opt.step()
            sched.step()
    return model
