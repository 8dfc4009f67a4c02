"""Readers for the formats of the verification community: ONNX networks and VNN-LIB properties."""

from lipbound.io.onnx_loader import SUPPORTED_OPS, load_onnx, onnx_input_shape

__all__ = ["SUPPORTED_OPS", "load_onnx", "onnx_input_shape"]
