"""Train the shipped ``digits-lipschitz`` (1-Lipschitz l_2 ReLU MLP on 8x8 digits).

Every Linear weight is reparametrised as ``W = V / max(1, sigma_max(V))`` (exact SVD at every
step), so each layer has spectral norm <= 1 throughout training; the loss is cross-entropy of
the logits scaled by a temperature of 16 (a 1-Lipschitz net needs large-margin training).
After training the projected matrices are stored in plain ``nn.Linear`` layers (and
re-projected in float64 with a 1e-6 safety factor, so every stored layer has spectral norm
< 1). Split train_test_split(test_size=0.25, random_state=0, stratify=y); seed 0, Adam (lr
3e-3), 150 epochs, batch 64. Writes lipbound/models/weights/digits-lipschitz.pt.

    python models/train_digits_lipschitz.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from _training import SpectralBall, project
from torch import nn

from lipbound.models.digits import digits_data
from lipbound.models.digits_lipschitz import digits_lipschitz

OUT = (Path(__file__).resolve().parents[1] / "lipbound" / "models" / "weights"
       / "digits-lipschitz.pt")
TEMPERATURE = 16.0



def main() -> None:
    torch.manual_seed(0)
    Xtr, ytr, Xte, yte = digits_data()
    model = digits_lipschitz()
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for lin in linears:
        nn.utils.parametrize.register_parametrization(lin, "weight", SpectralBall())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(150):
        perm = torch.randperm(len(Xtr))
        for i in range(0, len(Xtr), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss_fn(TEMPERATURE * model(Xtr[idx]), ytr[idx]).backward()
            opt.step()
    plain = digits_lipschitz()
    with torch.no_grad():
        for src, dst in zip(linears, [m for m in plain if isinstance(m, nn.Linear)]):
            dst.weight.copy_(project(src.weight))
            dst.bias.copy_(src.bias)
    plain.eval()
    with torch.no_grad():
        acc = (plain(Xte).argmax(1) == yte).float().mean().item()
    torch.save(plain.state_dict(), OUT)
    print(f"digits-lipschitz test accuracy {acc:.4f}; saved {OUT}")


if __name__ == "__main__":
    main()
