"""Registry of the small trained models that ship with lipbound.

Each model family lives in its own module under ``lipbound/models/`` and calls
:func:`register` at import time with a factory (architecture) and the name of a weights
file under ``lipbound/models/weights/``. The training script that produced the weights lives
under the repository's ``models/`` folder and is named in ``ModelInfo.trained_by``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from lipbound.devices import check_device
from lipbound.errors import InputError


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a shipped model.

    ``input_shape`` excludes the batch dimension; ``data`` names the data set it was trained on.
    """

    name: str
    factory: Callable[[], torch.nn.Module]
    weights: str
    input_shape: tuple[int, ...]
    num_outputs: int
    data: str
    description: str
    trained_by: str
    extra: dict = field(default_factory=dict)


_REGISTRY: dict[str, ModelInfo] = {}


def register(info: ModelInfo) -> None:
    """Add a model to the registry (names are unique)."""
    if info.name in _REGISTRY:
        raise ValueError(f"model {info.name!r} registered twice")
    _REGISTRY[info.name] = info


def available() -> list[str]:
    """Names of all shipped models."""
    _import_families()
    return sorted(_REGISTRY)


def info(name: str) -> ModelInfo:
    """Registry entry of a shipped model; raises InputError naming the available ones."""
    _import_families()
    if name not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; available models: {', '.join(available())}")
    return _REGISTRY[name]


def load(name: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build a shipped model, load its weights and return it in eval mode on ``device``
    (InputError for a device this machine does not have)."""

    device = check_device(device)
    entry = info(name)
    model = entry.factory()
    path = resources.files("lipbound.models") / "weights" / entry.weights
    with resources.as_file(path) as file:
        state = torch.load(file, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


def _import_families() -> None:
    """Import every family module so that its register() calls run."""
    for mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if mod.name not in {"registry"}:
            importlib.import_module(f"lipbound.models.{mod.name}")
