"""Specification matrices shared by the API's callers (one home for every user)."""

from __future__ import annotations

import torch


def margin_spec(label: int, num_classes: int, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> torch.Tensor:
    """``[K-1, K]`` rows ``e_label - e_j`` for every ``j != label`` (in increasing j): all
    rows positive means class ``label`` wins."""
    eye = torch.eye(num_classes, dtype=dtype, device=device)
    others = [j for j in range(num_classes) if j != label]
    return eye[label].unsqueeze(0) - eye[others]


def pair_spec(num_classes: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Rows ``e_c - e_j`` for every ordered pair c != j, c-major: [K (K - 1), K]."""
    eye = torch.eye(num_classes, dtype=dtype)
    return torch.stack([eye[c] - eye[j] for c in range(num_classes)
                        for j in range(num_classes) if j != c])
