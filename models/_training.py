"""The training loop and the save step shared by the scripts in ``models/`` (seeded by the
caller: the loop draws one ``torch.randperm`` per epoch, so results depend only on the seed)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn


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
