"""lipbound: certified local Lipschitz constants, output bounds and smoothing certificates."""

from lipbound import audit, models
from lipbound.api import (
    OutputBounds,
    OutputProof,
    jacobian_bounds,
    local_lipschitz,
    output_bounds,
    prove_outputs,
)
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
from lipbound.global_api import global_lipschitz, margin_lipschitz
from lipbound.graph.trace import trace
from lipbound.io import load_onnx, read_vnnlib
from lipbound.jacobian.global_bound import GlobalLipschitz
from lipbound.results import LipschitzResult
from lipbound.smoothing import Smooth
from lipbound.version import __version__

__all__ = [
    "GlobalLipschitz",
    "LipschitzResult",
    "Smooth",
    "load_onnx",
    "read_vnnlib",
    "OutputBounds",
    "OutputProof",
    "global_lipschitz",
    "margin_lipschitz",
    "jacobian_bounds",
    "local_lipschitz",
    "audit",
    "models",
    "output_bounds",
    "prove_outputs",
    "trace",
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
