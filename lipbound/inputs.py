"""Validation of user inputs shared by the public API functions."""

from __future__ import annotations

import math
import numbers
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lipbound.bounds.rounding import Precision
from lipbound.errors import InputError, ShapeError, SpecError, UnsupportedModelError
from lipbound.graph.ir import Graph, graph_to
from lipbound.graph.normalize import normalize
from lipbound.graph.trace import check_eval_mode, trace
from lipbound.graph.versions import model_version

_CACHE: OrderedDict[tuple, tuple[Graph, Graph]] = OrderedDict()
_CACHE_SIZE = 16


def as_tensor(x: Any, name: str = "x") -> Tensor:
    """A floating tensor from a tensor/ndarray/list; rejects NaN/inf."""
    if isinstance(x, np.ndarray) or isinstance(x, (list, tuple, float, int)):
        x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a tensor or array, got {type(x).__name__}")
    if not x.is_floating_point():
        x = x.double()
    if not torch.isfinite(x).all():
        raise InputError(f"{name} contains NaN or inf values; lipbound needs finite inputs")
    return x.detach()


#: compute dtypes whose rounding the bounds account for (:mod:`lipbound.bounds.rounding`)
COMPUTE_DTYPES = (torch.float32, torch.float64)
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_module(model: Any) -> nn.Module:
    """``model`` if it is a ``torch.nn.Module`` in eval mode.

    Call it before anything runs the model: a module in training mode would update its
    BatchNorm statistics. Raises InputError (not a module) or ModelModeError (training mode).
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_eval_mode(model)
    return model


def check_model(model: Any) -> nn.Module | Graph:
    """``model`` checked for bound computations: a traced Graph, or a module that passes
    :func:`check_module` and whose parameters and buffers are not float16 / bfloat16.

    Raises UnsupportedModelError for float16 / bfloat16 weights (their rounding is not
    accounted for; convert the model with ``model.float()`` or ``model.double()``).
    """
    if isinstance(model, Graph):
        return model
    check_module(model)
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    low = [(name, t.dtype) for name, t in tensors if t.dtype in _LOW_PRECISION]
    if low:
        name, dtype = low[0]
        raise UnsupportedModelError(
            f"the model has {str(dtype).removeprefix('torch.')} weights (e.g. {name!r}); "
            f"lipbound's bounds need float32 or float64 weights: convert the model with "
            "model.float() (or model.double()) first")
    return model


#: values of the ``precision`` option: the dtype of CROWN's backward coefficients
PRECISIONS = {"float64": None, "float32": torch.float32}


def check_precision(precision: Any) -> torch.dtype | None:
    """The coefficient dtype of ``precision`` ("float64": the compute dtype's own, "float32":
    float32 coefficients with per-step rounding allowances, :mod:`lipbound.propagate.mixed`)."""
    key = str(precision).lower().removeprefix("torch.") if precision is not None else None
    if not isinstance(precision, (str, torch.dtype)) or key not in PRECISIONS:
        raise InputError(f"precision must be 'float64' or 'float32', got {precision!r}")
    return PRECISIONS[key]


def check_dtype(dtype: Any) -> torch.dtype:
    """``dtype`` if it is a compute dtype lipbound bounds soundly (float32 or float64)."""
    if dtype in _LOW_PRECISION:
        raise InputError(f"dtype {dtype} is too low a precision for certified bounds (their "
                         "rounding is not accounted for); pass dtype=torch.float32 or "
                         "torch.float64")
    if dtype not in COMPUTE_DTYPES:
        raise InputError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def check_timeout(timeout: Any, optional: bool = True) -> float | None:
    """``timeout`` in seconds: a finite number > 0 (or None for no limit when ``optional``)."""
    if timeout is None and optional:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) \
            or not (math.isfinite(timeout) and timeout > 0):
        none = " or None (no limit)" if optional else ""
        raise InputError(f"timeout must be a finite number of seconds > 0{none}, got "
                         f"{timeout!r}")
    return float(timeout)


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1 (InputError for bools, floats and smaller values)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_finite_result(lower: Any, upper: Any, what: str, eps: float | None = None) -> None:
    """Raise InputError unless every bound in ``lower`` and ``upper`` is finite.

    The last guard of an entry point: bounds that overflowed (an absurd eps, or a data range
    too wide for the model) are NaN or infinite, never a certified result.
    """
    for t in (lower, upper):
        if t is not None and not bool(torch.isfinite(torch.as_tensor(t)).all()):
            at = "" if eps is None else f" at eps {eps:g}"
            raise InputError(f"bounds overflow: {what} are not finite{at}; eps is too large for "
                             "this model (use a smaller eps, or a data_range that bounds the "
                             "inputs), or the model takes sqrt, log or 1/x of a value that "
                             "can reach 0 there, whose rounding has no finite bound (e.g. "
                             "LPPool after a ReLU)")


def batched_for(model: nn.Module | Graph, x: Tensor) -> Tensor:
    """x as a batch of one for ``model``: a Graph's input shape, or :func:`batched_input`."""
    if isinstance(model, Graph):
        return x.reshape(1, *model[model.input].shape)
    return batched_input(model, x)


def batched_input(model: nn.Module, x: Tensor) -> Tensor:
    """x as a batch of one, [1, *in], checked by running the model.

    Accepts [*in] or [1, *in]; raises ShapeError if the model runs on neither or its output is
    not a [1, K] or [1] batch (and ModelModeError, before running it, for a model in training
    mode).
    """
    check_module(model)
    cands = [x] if x.dim() >= 1 and x.shape[0] == 1 else []
    cands.append(x.unsqueeze(0))
    param = next(iter(model.parameters()), None)
    mdtype = param.dtype if param is not None else torch.float32
    errors = []
    for cand in cands:
        try:
            with torch.no_grad():
                out = model(cand.to(mdtype))
        except Exception as exc:
            errors.append(f"{list(cand.shape)}: {type(exc).__name__}: {exc}")
            continue
        if isinstance(out, Tensor) and out.dim() in (1, 2) and out.shape[0] == 1:
            return cand  # [1, K], or [1]: one output per sample (traced as [1, 1])
        shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        errors.append(f"{list(cand.shape)}: output {shape} is not [1, K] or [1]")
    raise ShapeError(
        f"x of shape {list(x.shape)} does not fit the model (tried {'; '.join(errors)}). "
        "Pass one input of the shape the model expects, with or without a batch dimension "
        "of 1; the model must return [B, K]."
    )


_ONNX_MODELS: OrderedDict[tuple, nn.Module] = OrderedDict()


def resolve_model(model: Any) -> Any:
    """``model`` itself, or the network of an ONNX file when ``model`` is a path to one.

    A ``str`` / ``os.PathLike`` naming a ``.onnx`` (or ``.onnx.gz``) file is loaded with
    :func:`lipbound.io.load_onnx` (eval mode, the file's dtype); loads are cached by resolved
    path, size and modification time, so repeated calls share one module (do not modify it in
    place). Any other path raises :class:`~lipbound.errors.InputError`; the model is then
    checked with :func:`check_model` (before anything runs it).
    """
    if not isinstance(model, (str, os.PathLike)):
        return check_model(model)
    path = Path(model)
    if not (path.suffix == ".onnx" or path.name.endswith(".onnx.gz")):
        raise InputError(
            f"model {str(model)!r}: a model given as a path must be an ONNX file (.onnx or "
            ".onnx.gz); pass a torch.nn.Module otherwise"
        )
    if not path.is_file():
        raise InputError(f"ONNX file not found: {str(path)!r}")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    net = _ONNX_MODELS.get(key)
    if net is None:
        from lipbound.io import load_onnx

        net = load_onnx(path)
        _ONNX_MODELS[key] = net
        if len(_ONNX_MODELS) > _CACHE_SIZE:
            _ONNX_MODELS.popitem(last=False)
    else:
        _ONNX_MODELS.move_to_end(key)
    return check_model(net)


def _fingerprint(model: nn.Module) -> tuple:
    """The part of a cache key that says which state of ``model`` a value was derived from:
    its :func:`~lipbound.graph.versions.model_version` (changes with any parameter, buffer or
    structure change, compared by value)."""
    return (model_version(model),)


@dataclass(frozen=True)
class Traced:
    """A model's normalised ``graph`` (what bounds are computed on), its unrewritten graph
    ``raw`` (the operations its forward pass performs) and the ``precision`` of that pass."""

    graph: Graph
    raw: Graph
    precision: Precision


def get_traced(model: nn.Module | Graph, x1: Tensor, dtype: torch.dtype,
               device: torch.device) -> Traced:
    """The traced graphs of ``model`` at input shape x1, cast to ``dtype`` on ``device``.
    Traces are cached in memory (the last 16) until the model changes (see
    :mod:`lipbound.graph.versions`). A Graph passed in is its own raw graph, run in its
    parameters' dtype."""
    if isinstance(model, Graph):
        g = graph_to(model, dtype, device)
        return Traced(g, g, Precision.of(_graph_dtype(model)))
    check_model(model)
    key = (id(model), tuple(x1.shape), _fingerprint(model))
    cached = _CACHE.get(key)
    param = next(iter(model.parameters()), None)
    mdtype = param.dtype if param is not None else torch.float32
    mdev = param.device if param is not None else torch.device("cpu")
    if cached is None:
        raw = trace(model, x1.to(device=mdev, dtype=mdtype), normalize_graph=False)
        cached = (normalize(raw), raw)
        _CACHE[key] = cached
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    graph, raw = (graph_to(g, dtype, device) for g in cached)
    return Traced(graph, raw, Precision.of(mdtype, mdev))


def get_graph(model: nn.Module | Graph, x1: Tensor, dtype: torch.dtype,
              device: torch.device) -> Graph:
    """The traced, normalised graph of ``model`` at input shape x1 (cached), cast/moved."""
    return get_traced(model, x1, dtype, device).graph


def _graph_dtype(graph: Graph) -> torch.dtype:
    for n in graph.nodes:
        for v in n.params.values():
            if isinstance(v, Tensor) and v.is_floating_point():
                return v.dtype if v.dtype != torch.float64 else torch.float32
    return torch.float32


def check_eps(eps: Any) -> float:
    """``eps`` as a float: a finite number >= 0 (not a bool)."""
    if isinstance(eps, (bool, np.bool_)):
        raise InputError(f"eps must be a number, got {eps!r}")
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise InputError(f"eps must be a number, got {eps!r}") from None
    if not math.isfinite(e) or e < 0:
        raise InputError(f"eps must be a finite number >= 0, got {eps!r}")
    return e


def spec_matrix(spec: Any, num_outputs: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The [S, K] specification matrix (identity when spec is None)."""
    if spec is None:
        return torch.eye(num_outputs, dtype=dtype, device=device)
    try:
        C = as_tensor(spec, "spec").to(dtype=dtype, device=device)
    except InputError as exc:
        raise SpecError(str(exc)) from None
    if C.dim() == 1:
        C = C.unsqueeze(0)
    if C.dim() != 2 or C.shape[1] != num_outputs or C.shape[0] == 0:
        raise SpecError(
            f"spec must be a [S, K] matrix with K = {num_outputs} (the model's output size); "
            f"got shape {list(C.shape)}"
        )
    return C
