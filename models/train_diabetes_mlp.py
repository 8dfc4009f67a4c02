"""Train the shipped ``diabetes-mlp`` (10-16-16-1 ReLU regressor on sklearn's diabetes).

Features and target standardised on the training split (train_test_split(test_size=0.25,
random_state=0)). The weights are a parametrisation (:class:`Constrained`) that makes the net
increasing in bmi, bp and s5 and V-shaped in age by construction (see
``lipbound/models/diabetes.py`` for the rules); the shipped file is the plain
``nn.Sequential`` state dict it produces. Loss: mean squared error plus ``L2`` times the
squared weights of the produced net (the data set is small and noisy); seed 0, Adam (lr 1e-2),
``STEPS`` full-batch steps. Writes lipbound/models/weights/diabetes-mlp.pt
and prints the test R^2.

    python models/train_diabetes_mlp.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from lipbound.models.diabetes import (
    HIDDEN,
    MONOTONE_FEATURES,
    NON_MONOTONE_FEATURE,
    diabetes_box,
    diabetes_data,
    diabetes_mlp,
    unit_signs,
)

OUT = (Path(__file__).resolve().parents[1] / "lipbound" / "models" / "weights"
       / "diabetes-mlp.pt")
STEPS, L2, MIN_SLOPE = 500, 0.1, 0.05


class Constrained(nn.Module):
    """Free parameters -> weights of the 10-H-H-1 MLP satisfying the construction."""

    def __init__(self, age_lo: float, age_hi: float) -> None:
        super().__init__()
        H, F = HIDDEN - 2, HIDDEN  # free units, all units
        self.v1, self.b1 = nn.Parameter(0.3 * torch.randn(H, 10)), nn.Parameter(torch.zeros(H))
        self.v2, self.b2 = nn.Parameter(0.3 * torch.randn(H, H)), nn.Parameter(torch.zeros(H))
        self.v3, self.b3 = nn.Parameter(0.3 * torch.randn(H)), nn.Parameter(torch.zeros(1))
        self.knot, self.slopes = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(2))
        self.age_lo, self.age_hi, self.H, self.F = age_lo, age_hi, H, F
        self.register_buffer("s", unit_signs())

    def knot_value(self) -> Tensor:
        """m, kept in the middle 60 % of the age range of the training box."""
        return self.age_lo + (0.2 + 0.6 * torch.sigmoid(self.knot)) * (self.age_hi - self.age_lo)

    def weights(self) -> dict[str, Tensor]:
        H, F, s = self.H, self.F, self.s
        a = NON_MONOTONE_FEATURE
        w1 = torch.zeros(F, 10)
        free = self.v1.clone()
        mono = list(MONOTONE_FEATURES)
        free[:, mono] = s[:H, None] * self.v1[:, mono].abs()
        free[:, a] = 0.0  # age enters only through the two V units
        w1[:H] = free
        w1[H, a], w1[H + 1, a] = 1.0, -1.0
        m = self.knot_value()
        b1 = torch.cat([self.b1, torch.stack([-m, m])])
        w2 = torch.zeros(F, F)
        w2[:H, :H] = s[:H, None] * s[None, :H] * self.v2.abs()
        w2[H, H], w2[H + 1, H + 1] = 1.0, 1.0
        b2 = torch.cat([self.b2, torch.zeros(2)])
        c = MIN_SLOPE + softplus(self.slopes)
        w3 = torch.cat([s[:H] * self.v3.abs(), c]).unsqueeze(0)
        return {"0.weight": w1, "0.bias": b1, "2.weight": w2, "2.bias": b2,
                "4.weight": w3, "4.bias": self.b3}

    def forward(self, x: Tensor) -> Tensor:
        w = self.weights()
        h = torch.relu(x @ w["0.weight"].T + w["0.bias"])
        h = torch.relu(h @ w["2.weight"].T + w["2.bias"])
        return h @ w["4.weight"].T + w["4.bias"]


def r2(pred: Tensor, y: Tensor) -> float:
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def main() -> None:
    torch.manual_seed(0)
    Xtr, ytr, Xte, yte = diabetes_data()
    lower, upper = diabetes_box()
    a = NON_MONOTONE_FEATURE
    net = Constrained(float(lower[a]), float(upper[a]))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(STEPS):
        opt.zero_grad()
        w = net.weights()
        penalty = sum((w[k] ** 2).sum() for k in ("0.weight", "2.weight", "4.weight"))
        (((net(Xtr)[:, 0] - ytr) ** 2).mean() + L2 * penalty).backward()
        opt.step()
    model = diabetes_mlp()
    with torch.no_grad():
        model.load_state_dict({k: v.detach().clone() for k, v in net.weights().items()})
    model.eval()
    with torch.no_grad():
        score = r2(model(Xte)[:, 0], yte)
    torch.save(model.state_dict(), OUT)
    print(f"diabetes-mlp test R^2 {score:.4f}; age knot {float(net.knot_value().detach()):.4f}; "
          f"saved {OUT}")


if __name__ == "__main__":
    main()
