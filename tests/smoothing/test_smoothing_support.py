"""Base classifiers with closed-form smoothed behaviour, shared by the smoothing tests."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats
from torch import nn

from lipbound.smoothing import DualPair


def one_thread():
    """Context for tests that run many tiny certifications: torch's intra-op threads only add
    synchronisation cost on batches this small (10x slower on a loaded 2-core machine)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        old = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    return ctx()


class LinearBinary(nn.Module):
    """Logits ``(z/2, -z/2)`` with ``z = w.x + b`` (float64): class 0 iff ``z >= 0``.

    Every smoothed classifier built on it (hard votes, softmax or sparsemax scores, any
    temperature) has the decision boundary ``z = 0``: the true radius is ``|z(x)| / ||w||``.
    ``f_0 - f_1 = z`` is ``||w||``-Lipschitz.
    """

    def __init__(self, w, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float64).reshape(-1),
                              requires_grad=False)
        self.b = float(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.reshape(x.shape[0], -1).to(torch.float64) @ self.w + self.b
        return torch.stack([z / 2, -z / 2], dim=1)

    def margin(self, x) -> float:
        return float(torch.as_tensor(x, dtype=torch.float64).reshape(-1) @ self.w) + self.b

    def norm(self) -> float:
        return float(self.w.norm())

    def true_class_radius(self, x) -> tuple[int, float]:
        z = self.margin(x)
        return (0 if z > 0 else 1), abs(z) / self.norm()

    def p_top(self, x, sigma: float) -> float:
        return float(stats.norm.cdf(abs(self.margin(x)) / (sigma * self.norm())))


def linear_radius(model: LinearBinary):
    """Closed-form base radius of ``LinearBinary``: the distance to the hyperplane."""

    def fn(m, points, label):
        z = points.reshape(points.shape[0], -1).to(torch.float64) @ model.w + model.b
        return (z if label == 0 else -z) / model.norm()

    return fn


class Ramp1D(nn.Module):
    """Probabilities ``(h, 1 - h)``, ``h(x) = clip(L x + 1/2, 0, 1)``; each is L-Lipschitz.

    The smoothed score ``H(x) = E h(x + Z)`` crosses 1/2 at 0, so the true radius at ``x`` is
    ``|x|`` and ``psi_L(H(x)) = |x|`` exactly (the ramp is the extremal function).
    """

    def __init__(self, lipschitz: float) -> None:
        super().__init__()
        self.lip = float(lipschitz)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.clamp(self.lip * x.reshape(x.shape[0], -1)[:, 0].to(torch.float64) + 0.5, 0, 1)
        return torch.stack([h, 1 - h], dim=1)


class Constant(nn.Module):
    """Always class ``label`` (for the all-A cap)."""

    def __init__(self, num_classes: int = 3, label: int = 0) -> None:
        super().__init__()
        self.k, self.label = num_classes, label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.k)
        out[:, self.label] = 1.0
        return out


def linear_dual(w_l: float, b_l: float, w_r: float, b_r: float) -> DualPair:
    """DRS pair on inputs of shape ``(1, 2)`` split into columns: two 1-D linear halves."""
    return DualPair(LinearBinary([w_l], b_l).eval(), LinearBinary([w_r], b_r).eval(),
                    split="columns", input_shape=(1, 2))


def dual_truth(x, w_l, b_l, w_r, b_r) -> tuple[int, float]:
    """True class and radius of the DRS smoothed classifier of ``linear_dual``."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    s = (w_l * x[0] + b_l) / abs(w_l) + (w_r * x[1] + b_r) / abs(w_r)
    return (0 if s > 0 else 1), abs(s) / math.sqrt(2.0)


def test_linear_binary_closed_form():
    model = LinearBinary([3.0, 4.0], -1.0)
    x = torch.tensor([1.0, 0.5])
    assert model.true_class_radius(x) == (0, 4.0 / 5.0)
    out = model(x.unsqueeze(0))
    assert out.shape == (1, 2) and float(out[0, 0] - out[0, 1]) == 4.0


def test_ramp_outputs_in_simplex():
    ramp = Ramp1D(2.0)
    out = ramp(torch.linspace(-1, 1, 11).reshape(-1, 1))
    assert torch.all(out >= 0) and torch.allclose(out.sum(1), torch.ones(11, dtype=torch.float64))
