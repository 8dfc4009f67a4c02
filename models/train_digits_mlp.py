"""Train the shipped ``digits-mlp`` (64-32-32-10 ReLU MLP on scikit-learn's 8x8 digits).

Pixels are scaled to [0, 1]; the split is sklearn's train_test_split(test_size=0.25,
random_state=0, stratify=y). Seed 0, Adam, 60 epochs. Writes
lipbound/models/weights/digits-mlp.pt and prints the test accuracy.

    python models/train_digits_mlp.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lipbound.models.digits import digits_data, digits_mlp

OUT = Path(__file__).resolve().parents[1] / "lipbound" / "models" / "weights" / "digits-mlp.pt"


def main() -> None:
    torch.manual_seed(0)
    Xtr, ytr, Xte, yte = digits_data()
    model = digits_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(60):
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
    print(f"digits-mlp test accuracy {acc:.4f}; saved {OUT}")


if __name__ == "__main__":
    main()
