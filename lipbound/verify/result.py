"""The record :func:`lipbound.verify.verify` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

#: The VNN-COMP result vocabulary.
VERDICTS = ("unsat", "sat", "timeout", "unknown")


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of checking one VNN-LIB property.

    ``verdict``: ``"unsat"`` (proved: no input of any region reaches an unsafe output, by sound
    bounds), ``"sat"`` (violated: ``counterexample = (x, y)`` is a concrete input of the property
    with its output ``y``, re-checked on the reference executor, onnxruntime for ONNX files),
    ``"timeout"`` (the time limit expired first) or ``"unknown"`` (every method gave up before the
    limit). ``x`` / ``y`` are flat float64 tensors holding exactly the values that were checked.
    ``time``: wall-clock seconds. ``details``: which stage decided, per-stage counts and times.
    """

    verdict: str
    counterexample: tuple[Tensor, Tensor] | None
    time: float
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")
        if (self.verdict == "sat") != (self.counterexample is not None):
            raise ValueError("a counterexample goes with verdict 'sat' and only with it")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the counterexample as lists)."""
        cex = None
        if self.counterexample is not None:
            x, y = self.counterexample
            cex = {"x": x.tolist(), "y": y.tolist()}
        return {"verdict": self.verdict, "time": self.time, "counterexample": cex,
                "details": self.details}
