"""Readers for the formats of the verification community: ONNX networks and VNN-LIB properties.

- :func:`load_onnx`: an ONNX network as a batch-agnostic ``torch.nn.Module`` (eval mode).
- :func:`read_vnnlib`: a VNN-LIB property as input boxes with unsafe output conditions.
- :func:`read_instances`: a VNN-COMP ``instances.csv``.
- :func:`center_radius_linf`: the centre and radius of a clipped l_inf box.
"""

from lipbound.io.onnx_loader import SUPPORTED_OPS, load_onnx, onnx_input_shape
from lipbound.io.vnnlib import (
    Conjunction,
    InputRegion,
    Instance,
    VnnlibProperty,
    center_radius_linf,
    is_counterexample,
    is_refuted,
    parse_vnnlib,
    read_instances,
    read_vnnlib,
    stack_conjunctions,
)

__all__ = [
    "SUPPORTED_OPS",
    "Conjunction",
    "InputRegion",
    "Instance",
    "VnnlibProperty",
    "center_radius_linf",
    "is_counterexample",
    "is_refuted",
    "load_onnx",
    "onnx_input_shape",
    "parse_vnnlib",
    "read_instances",
    "read_vnnlib",
    "stack_conjunctions",
]
