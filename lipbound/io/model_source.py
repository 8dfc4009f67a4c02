"""Load a model from its source (what ``--model`` names on the command line, and what jobs
carry to worker processes).

A model source is one of

- a registry name (``digits-mlp``; ``lipbound.models.available()`` lists them);
- ``module:factory`` (or ``path/to/file.py:factory``): the factory is called without
  arguments and must return an ``nn.Module``; ``--state-dict FILE`` loads weights into it
  (``torch.load(weights_only=True)``);
- a ``torch.export`` file ``*.pt2`` (``torch.export.load(...).module()``); export it with a
  dynamic batch dimension, since lipbound runs the model on batches;
- an ONNX file ``*.onnx`` (:func:`lipbound.load_onnx`).

Every failure is an :class:`~lipbound.errors.InputError` naming the source and what to do.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lipbound import models
from lipbound.devices import check_device
from lipbound.errors import InputError, LipboundError
from lipbound.io.onnx_loader import load_onnx

SOURCES_HELP = ("a registry name, module:factory (with --state-dict FILE), a torch.export "
                ".pt2 file or an .onnx file")


@dataclass
class LoadedModel:
    """A model ready for bounds (eval mode) and what the CLI knows about it."""

    module: nn.Module
    name: str
    source: str  # "registry", "factory", "torch.export", "onnx"
    input_shape: tuple[int, ...] | None = None  # without the batch dimension, when known
    data: str | None = None  # default input source (a data-set name), when known


def load_model(source: str, state_dict: str | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """The model named by ``source`` (see the module docstring), in eval mode on ``device``."""

    device = check_device(device)
    path = Path(source)
    if state_dict is not None and (path.suffix in (".pt2", ".onnx") or ":" not in source):
        raise InputError("--state-dict goes with a module:factory model source, "
                         f"not with {source!r}")
    if path.suffix == ".pt2":
        loaded = _load_export(path)
    elif path.suffix == ".onnx":
        loaded = _load_onnx(path)
    elif ":" in source and not path.exists():
        loaded = _load_factory(source, state_dict)
    elif path.exists():
        raise InputError(f"{source} is not a model file lipbound reads ({SOURCES_HELP}); a "
                         "state dict is given as --state-dict FILE with a module:factory source")
    else:
        loaded = _load_registry(source)
    loaded.module = loaded.module.to(device)
    return loaded


def _load_registry(name: str) -> LoadedModel:
    try:
        entry = models.info(name)
    except InputError as exc:
        raise InputError(f"{exc}. A model source is {SOURCES_HELP}.") from None
    data = entry.extra.get("dataset") or next(
        (f"{d}:test" for d in ("digits", "diabetes", "mnist1d", "breast_cancer")
         if name.startswith(d.split("_")[0])), None)
    return LoadedModel(models.load(name), name, "registry", tuple(entry.input_shape), data)


def _import_module(spec: str):
    """Import ``spec``: a dotted module name (searched from the working directory too) or a
    path to a ``.py`` file."""
    if spec.endswith(".py"):
        file = Path(spec)
        if not file.is_file():
            raise InputError(f"module file {spec} does not exist")
        mod_spec = importlib.util.spec_from_file_location(file.stem, file)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        return module
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    return importlib.import_module(spec)


def _load_factory(source: str, state_dict: str | None) -> LoadedModel:
    mod_name, _, attr = source.rpartition(":")
    if not mod_name or not attr:
        raise InputError(f"model source {source!r}: expected module:factory")
    try:
        module = _import_module(mod_name)
    except LipboundError:
        raise
    except Exception as exc:
        raise InputError(f"cannot import {mod_name!r} for model source {source!r}: "
                         f"{type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"{mod_name!r} has no callable {attr!r} (model source {source!r})")
    try:
        model = factory()
    except Exception as exc:
        raise InputError(f"{source}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"{source}() returned {type(model).__name__}, not a torch.nn.Module")
    if state_dict is not None:
        model.load_state_dict(_read_state_dict(state_dict, source, model))
    return LoadedModel(model.eval(), source, "factory")


def _read_state_dict(file: str, source: str, model: nn.Module) -> dict:
    path = Path(file)
    if not path.is_file():
        raise InputError(f"state dict file {file} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{file} is not a torch state dict: {type(exc).__name__}: "
                         f"{str(exc)[:200]}") from None
    if not isinstance(state, dict):
        raise InputError(f"{file} holds a {type(state).__name__}, not a state dict")
    mine = set(model.state_dict())
    missing, unexpected = sorted(mine - set(state)), sorted(set(state) - mine)
    if missing or unexpected:
        raise InputError(f"state dict {file} does not fit {source}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return state


def _export_input_shape(ep) -> tuple[tuple[int | None, ...], bool]:
    """(per-sample input shape, whether the batch dimension is dynamic) of an ExportedProgram."""
    users = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    if len(users) != 1:
        raise InputError(f"the torch.export program has {len(users)} inputs; lipbound needs "
                         "exactly one tensor input")
    node = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == users[0])
    shape = tuple(node.meta["val"].shape)
    static = [int(d) if isinstance(d, int) else None for d in shape]
    return tuple(static[1:]), static[0] is None if static else False


def _load_export(path: Path) -> LoadedModel:
    if not path.is_file():
        raise InputError(f"model file {path} does not exist")
    try:
        ep = torch.export.load(str(path))
    except Exception as exc:
        raise InputError(f"{path} is not a torch.export file: {type(exc).__name__}: "
                         f"{str(exc)[:200]}") from None
    in_shape, dynamic = _export_input_shape(ep)
    if not dynamic:
        raise InputError(
            f"{path} was exported with a fixed batch size; lipbound runs the model on batches. "
            "Export it with a dynamic batch dimension: torch.export.export(model, (x,), "
            "dynamic_shapes=({0: torch.export.Dim('batch')},))")
    module = ep.module()
    for sub in module.modules():  # the exported graph is fixed; eval() is not allowed on it
        sub.training = False
    shape = None if any(d is None for d in in_shape) else tuple(int(d) for d in in_shape)
    return LoadedModel(module, path.name, "torch.export", shape)


def _load_onnx(path: Path) -> LoadedModel:
    if not path.is_file():
        raise InputError(f"model file {path} does not exist")
    try:
        module = load_onnx(path)
    except LipboundError:
        raise
    except Exception as exc:
        raise InputError(f"{path} is not a readable ONNX model: {type(exc).__name__}: "
                         f"{str(exc)[:200]}") from None
    return LoadedModel(module.eval(), path.name, "onnx")
