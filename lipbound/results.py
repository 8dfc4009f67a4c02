"""Immutable result records returned by the public API."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class LipschitzResult:
    """Certified local Lipschitz bounds per spec row.

    ``upper[s]`` >= sup over the input set of the dual norm of every (chain-rule) Clarke
    gradient of row s; ``lower[s]`` = dual norm of the gradient of row s at ``witness[s]``, a
    point of the input set (so the true constant lies in [lower, upper]).
    """

    upper: Tensor
    lower: Tensor
    witness: Tensor
    method: str
    norm: float
    eps: float
    status: str = "certified"
    time: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float:
        """The certified constant over all rows: max_s upper[s]."""
        return float(self.upper.max())

    @property
    def gap(self) -> float:
        """max_s upper[s] / max_s lower[s] (inf if the lower bound is 0)."""
        low = float(self.lower.max())
        return float("inf") if low <= 0 else self.value / low

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "upper": self.upper.tolist(),
            "lower": self.lower.tolist(),
            "value": self.value,
            "lower_value": float(self.lower.max()),
            "method": self.method,
            "norm": "inf" if self.norm == float("inf") else self.norm,
            "eps": self.eps,
            "status": self.status,
            "time": self.time,
            "details": {k: v for k, v in self.details.items()
                        if isinstance(v, (int, float, str, bool, list, dict, type(None)))},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LipschitzResult:
        """The result back from :meth:`to_dict` (float64 bounds; the witness, which
        ``to_dict`` does not keep, is empty)."""
        return cls(torch.tensor(d["upper"], dtype=torch.float64),
                   torch.tensor(d["lower"], dtype=torch.float64), torch.empty(0), d["method"],
                   math.inf if d["norm"] == "inf" else float(d["norm"]), float(d["eps"]),
                   d["status"], float(d["time"]), dict(d["details"]))
