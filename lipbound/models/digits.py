"""The ``digits-mlp`` model: a 64-32-32-10 ReLU MLP on scikit-learn's 8x8 digits."""

from __future__ import annotations

import torch
from torch import nn

from lipbound.models.registry import ModelInfo, register


def digits_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(X_train, y_train, X_test, y_test): pixels in [0, 1] as [N, 64] float32 tensors, the
    split of train_test_split(test_size=0.25, random_state=0, stratify=y)."""
    from sklearn.datasets import load_digits  # deferred: heavy optional dependency (sklearn)
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.25, random_state=0,
                                          stratify=y)
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return f(Xtr), torch.tensor(ytr), f(Xte), torch.tensor(yte)


def digits_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 10))


register(ModelInfo(
    name="digits-mlp", factory=digits_mlp, weights="digits-mlp.pt", input_shape=(64,),
    num_outputs=10, data="sklearn digits (8x8, pixels/16)",
    description="64-32-32-10 ReLU MLP", trained_by="models/train_digits_mlp.py",
    extra={"split": "train_test_split(test_size=0.25, random_state=0, stratify=y)"},
))
