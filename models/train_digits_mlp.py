"""Train the shipped ``digits-mlp`` (64-32-32-10 ReLU MLP on scikit-learn's 8x8 digits).

Pixels are scaled to [0, 1]; the split is sklearn's train_test_split(test_size=0.25,
random_state=0, stratify=y). Seed 0, Adam, 60 epochs. Writes
lipbound/models/weights/digits-mlp.pt and prints the test accuracy.

    python models/train_digits_mlp.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from _training import fit_classifier, save_classifier

from lipbound.models.digits import digits_data, digits_mlp

OUT = Path(__file__).resolve().parents[1] / "lipbound" / "models" / "weights" / "digits-mlp.pt"


def main() -> None:
    torch.manual_seed(0)
    Xtr, ytr, Xte, yte = digits_data()
    model = digits_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fit_classifier(model, Xtr, ytr, opt, epochs=60, batch=64)
    save_classifier(model, Xte, yte, OUT, "digits-mlp")


if __name__ == "__main__":
    main()
