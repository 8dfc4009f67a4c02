"""Version numbers of torch modules, for caches of what lipbound derives from a model.

:func:`model_version` returns a number that stays the same while a module is unchanged and
changes when it changes. It compares the module with a snapshot taken at the last call:

- the values (and dtype, shape, device) of every parameter, buffer and plain tensor
  attribute of every submodule, compared exactly (``torch.equal``), so any change counts,
  made through ``.data``, ``load_state_dict``, an in-place op or a new tensor;
- the structure: the names and classes of the submodules, their numbers, strings and tuples
  (stride, negative slope, eps, ``self.scale = 2.0``), forward methods set on an instance and
  the number of hooks.

A module that is collected takes its snapshot with it, and version numbers are never reused,
so a new module at the same ``id`` cannot hit an old cache entry. Not seen: changes to global
variables or to the code a ``forward`` calls. The snapshot holds one copy of the module's
tensors for as long as the module lives.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn

_PLAIN = (bool, int, float, str, type(None))
_NEXT = itertools.count(1)


@dataclass(frozen=True)
class _Snapshot:
    version: int
    structure: tuple
    tensors: tuple[Tensor, ...]


_SNAPSHOTS: weakref.WeakKeyDictionary[nn.Module, _Snapshot] = weakref.WeakKeyDictionary()


def model_version(model: nn.Module) -> int:
    """A number that is the same for two calls exactly when ``model`` did not change between
    them (in the sense of the module docstring)."""
    structure, tensors = _state(model)
    snap = _SNAPSHOTS.get(model)
    if snap is not None and snap.structure == structure and _same(snap.tensors, tensors):
        return snap.version
    snap = _Snapshot(next(_NEXT), structure, tuple(t.detach().clone() for t in tensors))
    _SNAPSHOTS[model] = snap
    return snap.version


def _state(model: nn.Module) -> tuple[tuple, list[Tensor]]:
    structure: list = []
    tensors: list[Tensor] = []
    for name, mod in model.named_modules(remove_duplicate=False):
        attrs = []
        for key, val in sorted(vars(mod).items()):
            if isinstance(val, Tensor):
                tensors.append(val)
                attrs.append((key, "tensor"))
            elif isinstance(val, _PLAIN) or (isinstance(val, tuple)
                                            and all(isinstance(v, _PLAIN) for v in val)):
                attrs.append((key, val))
            elif key == "forward" or callable(val) and not isinstance(val, nn.Module):
                attrs.append((key, id(val)))
        for group in (mod._parameters, mod._buffers):
            for key, val in group.items():
                attrs.append((key, val is None))
                if val is not None:
                    tensors.append(val)
        hooks = (len(mod._forward_hooks), len(mod._forward_pre_hooks))
        structure.append((name, type(mod), hooks, tuple(attrs)))
    return tuple(structure), tensors


def _same(old: tuple[Tensor, ...], new: list[Tensor]) -> bool:
    if len(old) != len(new):
        return False
    for a, b in zip(old, new):
        if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
            return False
        with torch.no_grad():
            if not torch.equal(a, b.detach()):
                return False
    return True
