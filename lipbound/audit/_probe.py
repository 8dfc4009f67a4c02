"""Point-wise evaluation of one partial derivative, for the monotonicity audit.

Everything here runs on a float64 copy of the model and only ever *finds* points; a point is
accepted as a witness only after :meth:`Probe.verify` has re-checked it in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lipbound.attack import pgd_minimize


class Probe:
    """Derivatives of ``f_output`` w.r.t. flat input coordinates over the box [lo, hi]."""

    def __init__(self, model64: nn.Module, lo: Tensor, hi: Tensor, output: int, tol: float):
        self.model = model64
        self.lo, self.hi = lo, hi
        self.output = output
        self.tol = tol

    def value(self, x: Tensor) -> Tensor:
        """f_output at a batch x [R, *in] -> [R] (float64)."""
        return self.model(x)[:, self.output]

    def gradient(self, x: Tensor, create_graph: bool = False) -> Tensor:
        """Autograd gradients [R, n] (flattened inputs) of f_output at x [R, *in]."""
        with torch.enable_grad():
            z = x.detach().requires_grad_(True) if not create_graph else x
            (g,) = torch.autograd.grad(self.value(z).sum(), z, create_graph=create_graph)
        return g.flatten(1)

    def derivative(self, x: Tensor, j: int) -> Tensor:
        """d f_output / d x_j at x [R, *in] -> [R] (autograd, float64)."""
        return self.gradient(x)[:, j].detach()

    def verify(self, x: Tensor, j: int, sign: int, step: float | None = None) -> bool:
        """Whether ``sign * d f / d x_j`` at x is strictly below ``-tol`` both by autograd and
        by a float64 central difference inside the box (so x is a genuine wrong-sign point and
        the two difference points a genuine violation pair). The difference steps
        1e-6 of the feature's range, or ``step`` if smaller (a point known to lie that deep
        inside a thin linear region)."""
        x = x.unsqueeze(0)
        if float(sign * self.derivative(x, j)[0]) >= -self.tol:
            return False
        lo_j, hi_j = float(self.lo.flatten()[j]), float(self.hi.flatten()[j])
        xj = float(x.flatten()[j])
        h = 1e-6 * max(hi_j - lo_j, 1e-300)
        if step is not None and 0 < step < h:
            h = step
        a, b = max(lo_j, xj - h), min(hi_j, xj + h)
        if not b > a:
            return False
        pair = x.repeat(2, *([1] * (x.dim() - 1))).flatten(1).clone()
        pair[0, j], pair[1, j] = a, b
        with torch.no_grad():
            fa, fb = self.value(pair.view(2, *x.shape[1:]))
        return float(sign * (fb - fa)) / (b - a) < -self.tol

    def search(self, j: int, sign: int, generator: torch.Generator, restarts: int = 4,
               steps: int = 30) -> Tensor:
        """Candidate points [R, *in] where ``sign * d f / d x_j`` may be negative: PGD on the
        derivative itself (useful for smooth activations) and on a forward difference over
        5 % of the feature's range (useful for ReLU nets, whose derivative is piecewise
        constant), with points along the best difference segment."""
        lo, hi = self.lo, self.hi

        def by_derivative(x: Tensor) -> Tensor:
            g = self.gradient(x, create_graph=True)[:, j]
            return sign * g + 0.0 * x.flatten(1).sum(1)

        x1, _ = pgd_minimize(by_derivative, lo, hi, steps=steps, restarts=restarts,
                             generator=generator)
        width = float((hi - lo).flatten()[j])
        step = torch.zeros_like(lo).flatten()
        step[j] = 0.05 * width
        step = step.view_as(lo)

        def by_difference(x: Tensor) -> Tensor:
            return sign * (self.value(x + step) - self.value(x)) + 0.0 * x.flatten(1).sum(1)

        x2, _ = pgd_minimize(by_difference, lo, hi - step, steps=steps, restarts=restarts,
                             generator=generator)
        t = torch.linspace(0, 1, 9, dtype=lo.dtype, device=lo.device).view(-1, *[1] * lo.dim())
        return torch.cat([x1.unsqueeze(0), x2.unsqueeze(0) + t * step.unsqueeze(0)])
