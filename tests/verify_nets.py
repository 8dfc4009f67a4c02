"""Tiny hand-built ONNX networks and VNN-LIB texts for the verification tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save

BENCH = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "vnncomp2021"

W1 = np.array([[1.0, -1.0], [0.5, 2.0]], dtype=np.float32)
B1 = np.array([0.0, -0.5], dtype=np.float32)
W2 = np.array([[1.0, 1.0], [-1.0, 0.5]], dtype=np.float32)
B2 = np.array([0.0, 0.0], dtype=np.float32)


def forward(x: np.ndarray) -> np.ndarray:
    """The tiny net in float64: y = W2 relu(W1 x + b1) + b2, x [R, 2] -> [R, 2]."""
    h = np.maximum(x @ W1.T.astype(np.float64) + B1, 0.0)
    return h @ W2.T.astype(np.float64) + B2


def grid_max_y0(n: int = 401) -> float:
    """Largest y0 on an n x n grid of [-1, 1]^2 (a lower bound of the true maximum)."""
    g = np.linspace(-1, 1, n)
    xs = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    return float(forward(xs)[:, 0].max())


def tiny_net(path: Path, op: str = "Relu") -> Path:
    """Write the 2-2-2 network (activation ``op``) as ONNX with input [1, 2]."""
    inits = [numpy_helper.from_array(a, n) for a, n in ((W1, "W1"), (B1, "B1"), (W2, "W2"),
                                                         (B2, "B2"))]
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], transB=1),
             helper.make_node(op, ["h"], ["a"]),
             helper.make_node("Gemm", ["a", "W2", "B2"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    save(model, str(path))
    return path


def box_text(outputs: str, lo: float = -1.0, hi: float = 1.0) -> str:
    """A VNN-LIB file over the tiny net's box [lo, hi]^2 with the given output assertion."""
    head = "".join(f"(declare-const X_{i} Real)\n" for i in range(2))
    head += "".join(f"(declare-const Y_{j} Real)\n" for j in range(2))
    box = "".join(f"(assert (>= X_{i} {lo}))\n(assert (<= X_{i} {hi}))\n" for i in range(2))
    return head + box + outputs + "\n"
