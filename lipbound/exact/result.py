"""Result records of the exact and SDP baselines (frozen, JSON-ready through ``to_dict``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


def _num(v: float) -> float | str:
    """JSON has no inf/nan: write them as strings."""
    v = float(v)
    if math.isfinite(v):
        return v
    return "inf" if v > 0 else ("-inf" if v < 0 else "nan")


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()] if v.ndim else _jsonable(v.item())
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return _num(v)
    return v


@dataclass(frozen=True, eq=False)
class ExactResult:
    """Exact (or bracketed, on timeout) chain-rule local Lipschitz constant of one spec row.

    - ``lower``: ||gradient||_q for ``pattern``, recomputed in float64; ``witness`` (in B, shaped
      like x0) is consistent with ``pattern`` (closed semantics), so ``lower`` is attained.
    - ``upper``: certified upper bound (the solver's dual bound for the MILP; for enumeration the
      maximum over all feasible patterns).  Valid up to the solvers' feasibility tolerances.
    - ``value``: equals ``upper`` (the project-wide convention value == upper).  With status
      "optimal", upper - lower is within the requested gap (1e-7 relative by default).
    - ``status``: "optimal" or "timeout".
    - ``n_binaries``: binaries of the MILP (0 for enumeration); ``n_unstable``: unstable neurons.
    """

    value: float
    lower: float
    upper: float
    status: str
    witness: torch.Tensor | None
    pattern: tuple[tuple[int, ...], ...] | None
    solve_time: float
    n_binaries: int
    n_unstable: int = 0
    method: str = ""
    norm: float = math.inf
    eps: float = 0.0
    details: dict = field(default_factory=dict)

    @property
    def gap(self) -> float:
        return self.upper - self.lower

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "status": self.status,
            "value": _num(self.value),
            "lower": _num(self.lower),
            "upper": _num(self.upper),
            "gap": _num(self.gap),
            "norm": _num(self.norm),
            "eps": _num(self.eps),
            "witness": _jsonable(self.witness) if self.witness is not None else None,
            "pattern": _jsonable(self.pattern) if self.pattern is not None else None,
            "solve_time": float(self.solve_time),
            "n_binaries": int(self.n_binaries),
            "n_unstable": int(self.n_unstable),
            "details": _jsonable(self.details),
        }


@dataclass(frozen=True, eq=False)
class LipSDPResult:
    """Global l2 Lipschitz bounds of x -> f(x) (or x -> c . f(x)).

    - ``sdp_value``: sqrt(rho) as returned by SCS (approximate, *not* certified);
    - ``certified``: sqrt of the smallest rho proven valid for the returned multipliers by a
      float64 eigenvalue check with a rigorous correction for the residual (sound);
    - ``naive``: product of the layers' spectral norms times the largest activation slopes (sound);
    - ``value``: min(certified, naive), the best sound bound.
    """

    value: float
    certified: float
    sdp_value: float
    naive: float
    solve_time: float
    status: str
    multipliers: tuple[np.ndarray, ...] = ()
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "method": "lipsdp-neuron",
            "status": self.status,
            "value": _num(self.value),
            "certified": _num(self.certified),
            "sdp_value": _num(self.sdp_value),
            "naive": _num(self.naive),
            "solve_time": float(self.solve_time),
            "details": _jsonable(self.details),
        }
