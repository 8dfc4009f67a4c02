"""Simplex maps that turn logits into soft base-classifier outputs (LVM-RS).

Each map ``s`` sends a logit vector ``z`` (scaled by an inverse temperature ``t``) to a point of
the probability simplex. ``lipschitz_factor(map, t, K)`` is a number ``c`` such that, for every
class ``c0``, the soft output ``s(t f(x))_{c0}`` is ``c * max_j L_{c0 j}``-Lipschitz (l2) whenever
every logit difference ``f_{c0} - f_j`` is ``L_{c0 j}``-Lipschitz. Proofs (checked numerically in
tests/smoothing/test_smoothing_lipschitz.py):

* softmax: the gradient of ``p_c`` w.r.t. ``z`` is ``p_c (e_c - p) = p_c sum_j p_j (e_c - e_j)``,
  so the gradient of ``p_c(t f(x))`` has norm ``<= t p_c sum_{j != c} p_j L_cj
  <= t p_c (1 - p_c) max_j L_cj <= (t / 4) max_j L_cj``.
  (The full softmax Jacobian ``diag(p) - p p^T`` has spectral norm ``<= 1/2``; the
  per-coordinate bound above is tighter.)
* sparsemax (Euclidean projection onto the simplex; piecewise linear): on a piece with support
  ``S`` (``|S| = k``) the gradient of ``p_c`` is ``e_c - 1_S / k = (1/k) sum_{j in S} (e_c - e_j)``
  for ``c in S`` and 0 otherwise, so the norm is ``<= t (k - 1) / k max_j L_cj
  <= t (K - 1) / K max_j L_cj``.
* hardmax (one-hot of the argmax): not continuous, factor ``inf``.
* identity: the model already outputs simplex points; the caller must give the constant of
  each output coordinate directly (factor ``nan`` here: not derivable from logit differences).
"""

from __future__ import annotations

import math

import torch

MAPS = ("softmax", "sparsemax", "hardmax", "identity")


def sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Sparsemax along the last dimension (Martins & Astudillo, 2016)."""
    zs, _ = torch.sort(z, dim=-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    cums = zs.cumsum(dim=-1)
    support = 1 + k * zs > cums
    k_z = support.sum(dim=-1, keepdim=True)  # >= 1 always
    tau = (cums.gather(-1, k_z - 1) - 1) / k_z.to(z.dtype)
    return torch.clamp(z - tau, min=0)


def hardmax(z: torch.Tensor) -> torch.Tensor:
    """One-hot of the argmax along the last dimension (ties: lowest index, as torch.argmax)."""
    out = torch.zeros_like(z)
    out.scatter_(-1, z.argmax(dim=-1, keepdim=True), 1.0)
    return out


def apply_map(name: str, logits: torch.Tensor, t: float) -> torch.Tensor:
    """``s_t(logits)`` in float64, shape preserved."""
    z = logits.to(torch.float64)
    if name == "softmax":
        return torch.softmax(t * z, dim=-1)
    if name == "sparsemax":
        return sparsemax(t * z)
    if name == "hardmax":
        return hardmax(z)
    if name == "identity":
        return z
    raise ValueError(f"unknown simplex map {name!r}; known: {', '.join(MAPS)}")


def lipschitz_factor(name: str, t: float, num_classes: int) -> float:
    """Factor ``c`` turning logit-difference constants into soft-output constants (module doc)."""
    if name == "softmax":
        return t / 4.0
    if name == "sparsemax":
        return t * (num_classes - 1) / num_classes
    if name == "hardmax":
        return math.inf
    if name == "identity":
        return math.nan
    raise ValueError(f"unknown simplex map {name!r}; known: {', '.join(MAPS)}")


def is_binary(name: str) -> bool:
    """Whether the map's outputs are one-hot (then Clopper–Pearson bounds apply per class)."""
    return name == "hardmax"
