"""Train the shipped ``digits-cnn`` (small ReLU CNN on scikit-learn's 8x8 digits).

Pixels in [0, 1], images [N, 1, 8, 8]; split train_test_split(test_size=0.25, random_state=0,
stratify=y). Seed 0, Adam (lr 3e-3), 40 epochs, batch 64. Writes
lipbound/models/weights/digits-cnn.pt and prints the test accuracy.

    python models/train_digits_cnn.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lipbound.models.digits_cnn import digits_cnn
from lipbound.models.digits_smooth import digits_images

OUT = Path(__file__).resolve().parents[1] / "lipbound" / "models" / "weights" / "digits-cnn.pt"


def main() -> None:
    torch.manual_seed(0)
    Xtr, ytr, Xte, yte = digits_images()
    model = digits_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(40):
        perm = torch.randperm(len(Xtr))
        for i in range(0, len(Xtr), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss_fn(model(Xtr[idx]), ytr[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(Xte).argmax(1) == yte).float().mean().item()
    torch.save(model.state_dict(), OUT)
    print(f"digits-cnn test accuracy {acc:.4f}; saved {OUT}")


if __name__ == "__main__":
    main()
