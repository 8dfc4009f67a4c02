"""Exception types of lipbound.

Every error a user can trigger with bad input is one of these, so callers can catch
``LipboundError`` (or the matching built-in base: ``ValueError`` / ``TypeError``).
"""

from __future__ import annotations

from collections.abc import Iterable


class LipboundError(Exception):
    """Base class of all lipbound errors."""


class UnsupportedOperationError(LipboundError, TypeError):
    """The model contains an operator lipbound cannot bound.

    The message names the operator, where it sits in the model and the supported operators.
    """

    def __init__(self, op: str, where: str, supported: Iterable[str], hint: str = "") -> None:
        self.op = op
        self.where = where
        self.supported = sorted(set(supported))
        msg = (
            f"unsupported operator {op!r} at {where}. "
            f"Supported operators: {', '.join(self.supported)}."
        )
        if hint:
            msg += f" {hint}"
        super().__init__(msg)


class ModelModeError(LipboundError, ValueError):
    """The model is in training mode (BatchNorm/Dropout would behave stochastically)."""


class InputError(LipboundError, ValueError):
    """An input tensor, radius, domain or option is invalid (shape, NaN/inf, negative eps...)."""


class ShapeError(InputError):
    """Shapes of the input, the model or a specification do not match."""


class SpecError(ShapeError):
    """A specification matrix C has the wrong shape or values."""


class UnsupportedNormError(InputError):
    """The requested norm is not one of l_inf, l_2, l_1."""


class UnknownMethodError(InputError):
    """The requested bound method (or certificate) does not exist."""


class UnsupportedModelError(LipboundError, TypeError):
    """The model as a whole cannot be handled by the requested method (e.g. MILP with tanh)."""


class TracingError(LipboundError, RuntimeError):
    """torch.export could not trace the model."""


class SolverError(LipboundError, RuntimeError):
    """An external solver (HiGHS, SCS) failed to return a usable certificate."""


class ProblemTooLargeError(LipboundError, ValueError):
    """The problem exceeds a settable size cap (e.g. too many MILP binaries)."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is torch running out of memory (a CUDA OutOfMemoryError, or the CPU
    allocator's RuntimeError), which callers turn into smaller chunks or
    :class:`ProblemTooLargeError`."""
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
