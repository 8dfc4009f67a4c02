"""Noise-trained digits models for randomized smoothing: ``digits-smooth-<sigma>``.

For each sigma in 0.12, 0.25, 0.5 (pixels in [0, 1]):

* ``digits-smooth-<sigma>``: Flatten-64-64-64-10 ReLU MLP on 8x8 images ``[N, 1, 8, 8]`` (also
  accepts ``[N, 64]``), trained with Gaussian noise of that sigma added to every batch;
* ``digits-smooth-<sigma>-left`` / ``-right``: Flatten-32-48-48-10 MLPs on the two
  half-resolution checkerboard sub-images ``[N, 1, 8, 4]`` used by the DRS (``dual``)
  certificate (``lipbound.smoothing.DualPair(left, right, split="checkerboard")``).

Data: ``lipbound.models.digits.digits_data()`` (sklearn digits, pixels/16, split
``train_test_split(test_size=0.25, random_state=0, stratify=y)``: 1347 train, 450 test images).
Trained by ``models/train_digits_smooth.py`` (seed 0). ``extra`` records sigma, the split and the
accuracies printed by the training script (clean, and of the base model under noise).
"""

from __future__ import annotations

import torch
from torch import nn

from lipbound.models.digits import digits_data
from lipbound.models.registry import ModelInfo, register

SIGMAS = (0.12, 0.25, 0.5)
SPLIT = "train_test_split(X / 16, y, test_size=0.25, random_state=0, stratify=y)"

# test-set accuracies printed by models/train_digits_smooth.py (clean / under N(0, sigma^2))
ACCURACY: dict[str, tuple[float, float]] = {
    "digits-smooth-0.12": (0.9822, 0.9713),
    "digits-smooth-0.12-left": (0.9578, 0.9344),
    "digits-smooth-0.12-right": (0.9711, 0.9498),
    "digits-smooth-0.25": (0.9867, 0.9431),
    "digits-smooth-0.25-left": (0.9511, 0.8457),
    "digits-smooth-0.25-right": (0.9711, 0.8717),
    "digits-smooth-0.5": (0.9756, 0.7801),
    "digits-smooth-0.5-left": (0.9311, 0.5837),
    "digits-smooth-0.5-right": (0.94, 0.6173),
}


def smooth_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def half_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(),
                         nn.Linear(48, 10))


def digits_images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``digits_data()`` reshaped to images ``[N, 1, 8, 8]``."""
    xtr, ytr, xte, yte = digits_data()
    return xtr.reshape(-1, 1, 8, 8), ytr, xte.reshape(-1, 1, 8, 8), yte


def name_of(sigma: float, part: str = "") -> str:
    return f"digits-smooth-{sigma:g}" + (f"-{part}" if part else "")


def _register() -> None:
    for sigma in SIGMAS:
        for part, factory, shape, desc in (
            ("", smooth_mlp, (1, 8, 8), "Flatten-64-64-64-10 ReLU MLP"),
            ("left", half_mlp, (1, 8, 4), "Flatten-32-48-48-10 ReLU MLP, DRS left sub-image"),
            ("right", half_mlp, (1, 8, 4), "Flatten-32-48-48-10 ReLU MLP, DRS right sub-image"),
        ):
            name = name_of(sigma, part)
            acc = ACCURACY.get(name)
            register(ModelInfo(
                name=name, factory=factory, weights=f"{name}.pt", input_shape=shape,
                num_outputs=10, data="sklearn digits (8x8 images, pixels/16)",
                description=f"{desc}, trained with Gaussian noise sigma={sigma:g}",
                trained_by="models/train_digits_smooth.py",
                extra={
                    "sigma": sigma,
                    "split": SPLIT,
                    "dual_split": "checkerboard" if part else None,
                    "test_accuracy_clean": acc[0] if acc else None,
                    "test_accuracy_noisy": acc[1] if acc else None,
                },
            ))


_register()
