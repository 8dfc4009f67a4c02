"""Train the shipped ``diabetes-mlp`` (10-16-16-1 ReLU regressor on sklearn's diabetes).

Features and target standardised on the training split (train_test_split(test_size=0.25,
random_state=0)). Loss: mean squared error plus ``LAMBDA`` times the mean of
``relu(MARGIN - d f / d x_j)`` over j in MONOTONE_FEATURES (bmi, bp, s5), the derivatives taken
by autograd at 256 points drawn uniformly from the training box each step, which pushes those
partial derivatives above MARGIN everywhere in the box, plus ``SMOOTH`` times the mean squared
input gradient at those points (the data set is small and noisy: this and the short schedule
keep the net from overfitting). Seed 0, Adam (lr 3e-3, weight decay 1e-2), 100 full-batch
steps. Writes lipbound/models/weights/diabetes-mlp.pt and prints the
test R^2.

    python models/train_diabetes_mlp.py
"""

from __future__ import annotations

from pathlib import Path

import torch

from lipbound.models.diabetes import MONOTONE_FEATURES, diabetes_box, diabetes_data, diabetes_mlp

OUT = (Path(__file__).resolve().parents[1] / "lipbound" / "models" / "weights"
       / "diabetes-mlp.pt")
LAMBDA, MARGIN, SMOOTH, STEPS = 30.0, 0.05, 0.1, 100


def r2(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def monotone_penalty(model: torch.nn.Module, lower: torch.Tensor, upper: torch.Tensor,
                     n: int = 256) -> torch.Tensor:
    z = (lower + torch.rand(n, lower.numel()) * (upper - lower)).requires_grad_(True)
    (g,) = torch.autograd.grad(model(z).sum(), z, create_graph=True)
    return (LAMBDA * torch.relu(MARGIN - g[:, list(MONOTONE_FEATURES)]).mean()
            + SMOOTH * (g ** 2).mean())


def main() -> None:
    torch.manual_seed(0)
    Xtr, ytr, Xte, yte = diabetes_data()
    lower, upper = diabetes_box()
    model = diabetes_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-2)
    for _ in range(STEPS):
        opt.zero_grad()
        mse = ((model(Xtr)[:, 0] - ytr) ** 2).mean()
        (mse + monotone_penalty(model, lower, upper)).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        score = r2(model(Xte)[:, 0], yte)
    torch.save(model.state_dict(), OUT)
    print(f"diabetes-mlp test R^2 {score:.4f}; saved {OUT}")


if __name__ == "__main__":
    main()
