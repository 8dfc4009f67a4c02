"""Lipschitz factors of the soft outputs ``softmax(z / t)`` and ``sparsemax(z / t)``.

Let ``s = sigma(z / t)`` and ``g(x) = c^T s(f(x))`` for a spec row c. For two inputs with
logits u = f(x), v = f(y), the map z -> c^T sigma(z / t) is Lipschitz along the segment
[v, u] (smooth for softmax; continuous and piecewise linear with finitely many pieces on a
segment for sparsemax), so

    |g(x) - g(y)| <= sup_z ||J(z)^T c||_r* ||u - v||_r      for any norm r on the logits,

with J the Jacobian of sigma(z / t) where it exists. Two choices of r are used:

* r = 2: ``||u - v||_2 <= L_vec ||x - y||_2`` with L_vec a bound on the l_2 -> l_2 Lipschitz
  constant of the whole logit vector;
* r = inf (any input norm p): ``||J^T c||_1 ||u - v||_inf <= ||J^T c||_1 max_k L_k ||x - y||_p``
  with L_k the p-Lipschitz bounds of the logit rows.

**Softmax.** ``J = (diag(p) - p p^T) / t`` with p on the simplex. J is symmetric positive
semidefinite; row i has diagonal ``p_i (1 - p_i)`` and off-diagonal absolute sum
``p_i sum_{j != i} p_j = p_i (1 - p_i)``. By Gershgorin every eigenvalue is at most
``max_i 2 p_i (1 - p_i) <= 1/2``, and the largest absolute row (= column) sum is the same
``<= 1/2``. Hence ``||J||_2 <= 1 / (2t)`` and ``||J||_1 = ||J||_inf <= 1 / (2t)``:
``||J^T c||_2 <= ||c||_2 / (2t)`` and ``||J^T c||_1 <= ||c||_1 / (2t)``.

**Sparsemax** (the Euclidean projection onto the simplex). Where differentiable,
``J = (diag(m) - m m^T / |S|) / t`` with m the indicator of the support S: an orthogonal
projection over t, so ``||J||_2 <= 1 / t`` (sparsemax is non-expansive in l_2 everywhere);
a row i in S has absolute sum ``(1 - 1/|S|) + (|S| - 1)/|S| = 2 (1 - 1/|S|) <= 2 (1 - 1/K)``
(K classes), rows outside S are zero, and J is symmetric: ``||J||_1 = ||J||_inf <=
2 (1 - 1/K) / t``.

Every factor is rounded upward.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lipbound.errors import InputError
from lipbound.jacobian.spectral import gamma_up, up

OUTPUTS = ("logits", "softmax", "sparsemax")


def check_output(output: str, temperature: float) -> None:
    """Raise InputError for an unknown output or a temperature that is not positive."""
    if output not in OUTPUTS:
        raise InputError(f"output must be one of {OUTPUTS}, got {output!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and temperature > 0):
        raise InputError(f"temperature must be a positive finite number, got {temperature!r}")


def soft_factors(output: str, temperature: float, num_classes: int) -> tuple[float, float]:
    """``(a2, a1)`` with ``||J^T c||_2 <= a2 ||c||_2`` and ``||J^T c||_1 <= a1 ||c||_1`` for
    every Jacobian J of the soft output (module docstring), rounded up."""
    t = float(temperature)
    if output == "softmax":
        a = up(0.5 / t)
        return a, a
    k = max(num_classes, 1)
    return up(1.0 / t), up(up(2.0 * (1.0 - 1.0 / k)) / t)


def soft_rows(output: str, temperature: float, C: Tensor, row_bounds: Tensor,
              vector_l2: float | None) -> Tensor:
    """Certified bounds [S] on the Lipschitz constants of the rows of ``C sigma(f / t)``
    from ``row_bounds`` [K] (the rows of f, any input norm) and, for the l_2 input norm,
    ``vector_l2`` (a bound for the logit vector; None where not available)."""
    K = C.shape[1]
    a2, a1 = soft_factors(output, temperature, K)
    C64 = C.detach().double().cpu()
    g = 1 + gamma_up(K + 2)
    c1 = torch.linalg.vector_norm(C64, ord=1, dim=1) * g
    out = c1 * a1 * float(row_bounds.max()) * (1 + 4 * 2.0 ** -53)
    if vector_l2 is not None and math.isfinite(vector_l2):
        c2 = torch.linalg.vector_norm(C64, ord=2, dim=1) * g
        out = torch.minimum(out, c2 * a2 * vector_l2 * (1 + 4 * 2.0 ** -53))
    return torch.nextafter(out, torch.full_like(out, math.inf))


__all__ = ["OUTPUTS", "check_output", "soft_factors", "soft_rows"]
