"""Train the shipped ``mnist1d-cnn`` (small ReLU 1-D CNN on MNIST-1D).

The data set is regenerated offline by ``lipbound.models.mnist1d.mnist1d_data()`` (the mnist1d
package's ``make_dataset(get_dataset_args())``, default arguments, generator seed 42).
Seed 0, Adam (lr 3e-3, weight decay 1e-4), 60 epochs, batch 100. Writes
lipbound/models/weights/mnist1d-cnn.pt and prints the test accuracy.

    python models/train_mnist1d_cnn.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lipbound.models.mnist1d import mnist1d_cnn, mnist1d_data

OUT = Path(__file__).resolve().parents[1] / "lipbound" / "models" / "weights" / "mnist1d-cnn.pt"


def main() -> None:
    torch.manual_seed(0)
    Xtr, ytr, Xte, yte = mnist1d_data()
    model = mnist1d_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 60)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(60):
        perm = torch.randperm(len(Xtr))
        for i in range(0, len(Xtr), 100):
            idx = perm[i:i + 100]
            opt.zero_grad()
            loss_fn(model(Xtr[idx]), ytr[idx]).backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model(Xte).argmax(1) == yte).float().mean().item()
    torch.save(model.state_dict(), OUT)
    print(f"mnist1d-cnn test accuracy {acc:.4f}; saved {OUT}")


if __name__ == "__main__":
    main()
