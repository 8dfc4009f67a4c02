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
from _training import fit_classifier, save_classifier

from lipbound.models.mnist1d import mnist1d_cnn, mnist1d_data

OUT = Path(__file__).resolve().parents[1] / "lipbound" / "models" / "weights" / "mnist1d-cnn.pt"


def main() -> None:
    torch.manual_seed(0)
    Xtr, ytr, Xte, yte = mnist1d_data()
    model = mnist1d_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 60)
    fit_classifier(model, Xtr, ytr, opt, epochs=60, batch=100, sched=sched)
    save_classifier(model, Xte, yte, OUT, "mnist1d-cnn")


if __name__ == "__main__":
    main()
