"""The ONNX side of a conversion: reading the file and the two kinds of values it tracks.

:func:`read_model` opens a (possibly gzipped) ONNX file, :func:`graph_input` finds its single
input, :func:`inferred_shapes` asks ONNX shape inference for intermediate shapes (a cross-check)
and :func:`node_attributes` decodes a node's attributes. During the walk every ONNX tensor is
either a :class:`Const` (folded to a numpy array) or a :class:`Dyn` (computed from the network
input; see :mod:`lipbound.io.onnx_loader` for its batch layout).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lipbound.errors import InputError


@dataclass(frozen=True)
class Dyn:
    """A tensor computed from the network input.

    ``shape`` is its ONNX shape for one sample; the torch tensor is ``[B, *shape[1:]]`` when
    ``lead`` (then ``shape[0] == 1``) and ``[B, *shape]`` otherwise.
    """

    key: str
    shape: tuple[int, ...]
    lead: bool

    @property
    def sample(self) -> tuple[int, ...]:
        return self.shape[1:] if self.lead else self.shape


@dataclass(frozen=True)
class Const:
    array: np.ndarray


Value = Dyn | Const

# ONNX element types lipbound can run as the network input
FLOAT_TYPES = {1: torch.float32, 11: torch.float64, 10: torch.float16}


def read_model(path: str | Path):
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX file not found: {str(path)!r}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return onnx.load_model_from_string(fh.read())
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise InputError(f"{path}: not a readable ONNX model ({exc})") from exc


def graph_input(model, path) -> tuple[object, tuple]:
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if len(inputs) != 1:
        raise InputError(
            f"{path}: lipbound needs a network with exactly one input, this one has "
            f"{len(inputs)}: {[i.name for i in inputs]}"
        )
    dims = []
    for d in inputs[0].type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return inputs[0], tuple(dims)


def inferred_shapes(model) -> dict[str, tuple[int, ...]]:
    """Static shapes ONNX shape inference finds for intermediate tensors (a cross-check)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is only a safety net
        return {}
    out = {}
    for info in inferred.graph.value_info:
        ttype = info.type.tensor_type
        if ttype.HasField("shape") and all(d.HasField("dim_value") for d in ttype.shape.dim):
            out[info.name] = tuple(d.dim_value for d in ttype.shape.dim)
    return out


def node_attributes(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out
