"""Operators and their relaxations; see :mod:`lipbound.ops.registry` for the full list.

Adding an op is one file and one test case. The file is a module of this package (the
registry imports every module here, so no list names it) that defines the op class with
its facts (:class:`~lipbound.ops.base.Op`: bounds, relaxation, Jacobian rule, kinks, Lipschitz
and rounding facts, ...), calls :func:`~lipbound.ops.registry.register` on an instance, and
registers the ATen calls it converts with :func:`~lipbound.ops.tracing.converts`. The test
case is its row in ``CASES`` of ``tests/ops/test_ops_soundness.py`` (required for every
registered op). ``tests/ops/test_new_op_one_file.py`` proves it on two ops the library lacks.
"""

from lipbound.ops.base import LinearOp, NonlinearOp, Op, Relaxation
from lipbound.ops.registry import REGISTRY, get, kinds

__all__ = ["REGISTRY", "LinearOp", "NonlinearOp", "Op", "Relaxation", "get", "kinds"]
