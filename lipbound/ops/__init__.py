"""Operators and their relaxations; see :mod:`lipbound.ops.registry` for the full list."""

from lipbound.ops.base import LinearOp, NonlinearOp, Op, Relaxation
from lipbound.ops.registry import REGISTRY, get, kinds

__all__ = ["REGISTRY", "LinearOp", "NonlinearOp", "Op", "Relaxation", "get", "kinds"]
