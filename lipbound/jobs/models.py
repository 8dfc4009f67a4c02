"""How a job names its model, and the model resident in each worker process.

A job's model is a registry name (``lipbound.models.load``), a :class:`ModelSource` (any source
``lipbound.io.model_source.load_model`` reads: registry name, ``module:factory`` with a state
dict, ``.pt2``, ``.onnx``) or a ``torch.nn.Module`` (pickled with the job). Names and sources
are loaded once per worker process and kept resident; a source may carry the module already
loaded in the calling process, which it uses there and never pickles. ``device="auto"`` picks
CUDA when the worker sees a GPU (a Ray worker with ``num_gpus`` does), else the CPU.
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from lipbound import models
from lipbound.errors import InputError
from lipbound.io.model_source import load_model


def absolute(path: str | None) -> str | None:
    """An existing file's absolute path (workers may run in another directory); else as is."""
    return os.path.abspath(path) if path is not None and os.path.exists(path) else path


@functools.lru_cache(maxsize=4)
def _load_source(source: str, state_dict: str | None) -> torch.nn.Module:
    return load_model(source, state_dict).module


@dataclass
class ModelSource:
    """A model by its source (``--model`` and ``--state-dict``; file paths made absolute).

    ``module``: the model already loaded in this process (dropped when the job is pickled:
    workers load the source once and keep it)."""

    source: str
    state_dict: str | None = None
    module: torch.nn.Module | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.source = absolute(self.source)
        self.state_dict = absolute(self.state_dict)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "module": None}

    def load(self) -> torch.nn.Module:
        if self.module is None:
            self.module = _load_source(self.source, self.state_dict)
        return self.module


ModelRef = str | ModelSource | torch.nn.Module


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@functools.lru_cache(maxsize=8)
def _load_named(name: str, device: str) -> torch.nn.Module:
    return models.load(name, device=device)


def resident_model(model: ModelRef, device: str = "auto") -> torch.nn.Module:
    """The model on ``device``: a registry name is loaded once per process and cached, a
    source once per process (or its module is used); a module already on that device is used
    as is, otherwise a copy is moved there."""
    dev = resolve_device(device)
    if isinstance(model, str):
        return _load_named(model, str(dev))
    if isinstance(model, ModelSource):
        model = model.load()
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model must be a registry name, a ModelSource or a torch.nn.Module, "
                         f"got {type(model).__name__}")
    first = next(model.parameters(), None)
    if first is None or first.device == dev:
        return model
    return copy.deepcopy(model).to(dev).eval()


def split_item(item: Any) -> tuple[Any, int | None, int | None]:
    """``(x, label, row)`` from an item that is ``x``, ``(x, label)`` or a tuple
    ``(x, label, row)`` (label and row may be None)."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], None if item[1] is None else int(item[1]), None
    if isinstance(item, tuple) and len(item) == 3:
        return (item[0], None if item[1] is None else int(item[1]),
                None if item[2] is None else int(item[2]))
    return item, None, None
