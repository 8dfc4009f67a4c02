"""Where a result came from: package versions, device, and content hashes of models and inputs.

The model hash is the sha256 of the model's state dict in a canonical order (entries sorted by
name; for each: name, dtype, shape and the raw little-endian bytes of the contiguous CPU
tensor), so two models with the same parameter names and values hash equally whatever their
device or loading path (registry, module:factory with a state dict, torch.export). A
conversion that renames parameters (ONNX) gives another hash.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from functools import cache
from importlib import metadata
from typing import Any

import numpy as np
import torch
from torch import nn

from lipbound.version import __version__

# distribution name -> key in the record's "environment"
PACKAGES = {"torch": "torch", "numpy": "numpy", "cvxpy": "cvxpy", "highspy": "highs",
            "scs": "scs"}


def lipbound_version() -> str:
    """The installed lipbound version."""
    return str(__version__)


def environment() -> dict[str, str]:
    """Versions of python, the platform and the numerical packages ("absent" if missing)."""
    return dict(_environment())


@cache
def _environment() -> tuple[tuple[str, str], ...]:
    """Read once per process: package metadata takes milliseconds a lookup, which every
    record of a data set would otherwise pay (more than certifying a small model's input)."""
    env = {"python": platform.python_version(), "platform": sys.platform}
    for dist, key in PACKAGES.items():
        try:
            env[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[key] = "absent"
    return tuple(env.items())


def device_of(obj: Any) -> str:
    """The device of a model's first parameter/buffer or of a tensor ("cpu" if it has none),
    with the GPU's name for CUDA devices."""
    if isinstance(obj, torch.Tensor):
        dev = obj.device
    else:
        tensors = [*obj.parameters(), *obj.buffers()] if isinstance(obj, nn.Module) else []
        dev = tensors[0].device if tensors else torch.device("cpu")
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return str(dev)


def _tensor_bytes(t: torch.Tensor) -> bytes:
    a = t.detach().cpu().contiguous()
    if a.dtype == torch.bfloat16:
        a = a.float()
    arr = a.numpy()
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def tensor_hash(t: Any) -> str:
    """``sha256:<hex>`` of a tensor's dtype, shape and bytes."""
    t = torch.as_tensor(np.asarray(t)) if not isinstance(t, torch.Tensor) else t
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(_tensor_bytes(t))
    return "sha256:" + h.hexdigest()


def model_hash(model: nn.Module) -> str:
    """``sha256:<hex>`` of the state dict in canonical order (see the module docstring)."""
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        value = state[name]
        if not isinstance(value, torch.Tensor):
            continue
        h.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        h.update(_tensor_bytes(value))
    return "sha256:" + h.hexdigest()
