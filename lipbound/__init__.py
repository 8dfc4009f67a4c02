"""lipbound: certified local Lipschitz constants, output bounds and smoothing certificates."""

from lipbound.errors import (
    InputError,
    LipboundError,
    ModelModeError,
    ShapeError,
    SpecError,
    UnknownMethodError,
    UnsupportedModelError,
    UnsupportedNormError,
    UnsupportedOperationError,
)

__version__ = "0.1.0"

__all__ = [
    "InputError",
    "LipboundError",
    "ModelModeError",
    "ShapeError",
    "SpecError",
    "UnknownMethodError",
    "UnsupportedModelError",
    "UnsupportedNormError",
    "UnsupportedOperationError",
    "__version__",
]
