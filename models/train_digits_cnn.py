"""Train the shipped ``digits-cnn`` (small ReLU CNN on scikit-learn's 8x8 digits).

Pixels in [0, 1], images [N, 1, 8, 8]; split train_test_split(test_size=0.25, random_state=0,
stratify=y). Seed 0, Adam (lr 3e-3), 40 epochs, batch 64. Writes
lipbound/models/weights/digits-cnn.pt and prints the test accuracy.

    python models/train_digits_cnn.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from _training import fit_classifier, save_classifier

from lipbound.models.digits_cnn import digits_cnn
from lipbound.models.digits_smooth import digits_images

OUT = Path(__file__).resolve().parents[1] / "lipbound" / "models" / "weights" / "digits-cnn.pt"


def main() -> None:
    torch.manual_seed(0)
    Xtr, ytr, Xte, yte = digits_images()
    model = digits_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit_classifier(model, Xtr, ytr, opt, epochs=40, batch=64)
    save_classifier(model, Xte, yte, OUT, "digits-cnn")


if __name__ == "__main__":
    main()
