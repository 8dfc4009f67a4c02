"""Train the noise-augmented digits models for randomized smoothing (``digits-smooth-*``).

For each sigma in 0.12, 0.25, 0.5: a Flatten-64-64-64-10 MLP on 8x8 images and, for the DRS
``dual`` certificate, two Flatten-32-48-48-10 MLPs on the checkerboard half-resolution
sub-images. Pixels in [0, 1] (sklearn digits / 16), split
``train_test_split(test_size=0.25, random_state=0, stratify=y)`` (``lipbound.models.digits``).
Every batch gets fresh Gaussian noise N(0, sigma^2 I) (no clipping, as in smoothing). Adam,
lr 3e-3 with cosine decay, 200 epochs of batch 64, seed 0 (+ the model's index). Writes
``lipbound/models/weights/digits-smooth-*.pt`` and prints the accuracies to paste into
``lipbound/models/digits_smooth.py`` (``ACCURACY``).

    OMP_NUM_THREADS=1 python models/train_digits_smooth.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from _training import fit_noisy, print_accuracies
from torch import nn

from lipbound.models.digits_smooth import SIGMAS, digits_images, half_mlp, name_of, smooth_mlp
from lipbound.smoothing.certificates.dual import DualPair

WEIGHTS = Path(__file__).resolve().parents[1] / "lipbound" / "models" / "weights"
EPOCHS = 200


def train(model: nn.Module, xtr, ytr, sigma: float, seed: int, view=lambda z: z) -> nn.Module:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    fit_noisy(model, lambda z: model(view(z)), xtr, ytr, sigma, EPOCHS, gen)
    return model.eval()


def accuracy(model, x, y, sigma: float, view=lambda z: z, copies: int = 20) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        clean = (model(view(x)).argmax(1) == y).float().mean().item()
        noisy = sum(
            (model(view(x + sigma * torch.randn(x.shape, generator=gen))).argmax(1) == y)
            .float().mean().item()
            for _ in range(copies)
        ) / copies
    return round(clean, 4), round(noisy, 4)


def main() -> None:
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = digits_images()
    pair = DualPair(nn.Identity(), nn.Identity(), split="checkerboard")
    left_view = lambda z: pair.split(z)[0]  # noqa: E731
    right_view = lambda z: pair.split(z)[1]  # noqa: E731
    results = {}
    for i, sigma in enumerate(SIGMAS):
        for part, factory, view in (("", smooth_mlp, lambda z: z), ("left", half_mlp, left_view),
                                    ("right", half_mlp, right_view)):
            name = name_of(sigma, part)
            model = train(factory(), xtr, ytr, sigma, seed=10 * i + len(part), view=view)
            torch.save(model.state_dict(), WEIGHTS / f"{name}.pt")
            results[name] = accuracy(model, xte, yte, sigma, view)
            print(f"{name}: clean / noisy test accuracy {results[name]}", flush=True)
    print_accuracies(results)


if __name__ == "__main__":
    main()
