"""Verification of VNN-LIB properties: certified "unsat", confirmed "sat" counterexamples.

- :func:`verify`: decide one property for a network (``nn.Module`` or ONNX path) in a time limit.
- :class:`VerificationResult`: verdict ("unsat" / "sat" / "timeout" / "unknown"),
  counterexample, time and per-stage details.

See :mod:`lipbound.verify.core` for the stages and :mod:`lipbound.report.verdicts` for the
VNN-COMP results CSV and counterexample files.
"""

from lipbound.verify.core import SPLIT_MAX_INPUTS, verify
from lipbound.verify.result import VERDICTS, VerificationResult

__all__ = ["SPLIT_MAX_INPUTS", "VERDICTS", "VerificationResult", "verify"]
