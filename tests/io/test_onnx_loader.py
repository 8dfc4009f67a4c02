"""lipbound.io.load_onnx: converted networks match onnxruntime and trace to plain aten ops."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import lipbound  # noqa: E402
from lipbound.errors import InputError, ShapeError, UnsupportedOperationError  # noqa: E402
from lipbound.io import SUPPORTED_OPS, load_onnx, onnx_input_shape  # noqa: E402

BENCH = Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "vnncomp2021"
SHARED_NETS = sorted(BENCH.glob("**/*.onnx")) if BENCH.is_dir() else []

# aten ops the core engine maps (the contract of load_onnx's output)
ALLOWED_ATEN = {
    "linear", "addmm", "mm", "t", "conv2d", "conv1d", "relu", "leaky_relu", "sigmoid", "tanh",
    "avg_pool2d", "max_pool2d", "pad", "constant_pad_nd", "add.Tensor", "sub.Tensor", "mul.Tensor",
    "div.Tensor", "flatten.using_ints", "view", "reshape", "permute", "cat", "batch_norm",
    "_native_batch_norm_legit_no_training", "clone", "alias", "contiguous", "unsqueeze", "squeeze",
}  # fmt: skip


def aten_ops(model: torch.nn.Module) -> set[str]:
    """Names of the aten ops torch.export produces for ``model`` on a batch of 2."""
    x = torch.rand(2, *model.input_shape)
    ep = torch.export.export(model, (x,))
    names = set()
    for node in ep.graph.nodes:
        if node.op == "call_function":
            name = str(node.target)
            assert name.startswith("aten."), name
            name = name[len("aten.") :]
            names.add(name[: -len(".default")] if name.endswith(".default") else name)
    return names


def assert_matches_ort(path: Path, model: torch.nn.Module, batch: torch.Tensor) -> None:
    """Each sample of ``batch`` through ``model`` equals onnxruntime on the ONNX file."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    with torch.no_grad():
        got = model(batch).numpy()
    assert got.shape == (batch.shape[0], model.output_size)
    for i in range(batch.shape[0]):
        ref = sess.run(None, {inp.name: batch[i].numpy().reshape(shape)})[0].reshape(-1)
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(got[i], ref, rtol=0, atol=1e-5 * scale)


# ---------------------------------------------------------------------------- shared networks
EXPECTED_SHAPES = {
    "ACASXU_run2a_1_1_batch_2000.onnx": ((1, 1, 5), 5),
    "resnet_2b.onnx": ((3, 32, 32), 10),
    "ffnnSIGMOID__Point_6x200.onnx": ((1, 28, 28), 10),
    "mnist-net_256x2.onnx": ((784, 1), 10),
    "cifar_base_kw.onnx": ((3, 32, 32), 10),
    "test_small.onnx": ((1,), 1),
    "Convnet_avgpool.onnx": ((1, 28, 28), 10),
}


@pytest.mark.skipif(not SHARED_NETS, reason="shared VNN-COMP benchmarks not present")
@pytest.mark.parametrize("path", SHARED_NETS, ids=lambda p: p.name)
def test_shared_network_matches_onnxruntime_and_exports(path):
    start = time.perf_counter()
    model = load_onnx(path)
    assert time.perf_counter() - start < 5.0
    assert not model.training
    if path.name in EXPECTED_SHAPES:
        assert (model.input_shape, model.output_size) == EXPECTED_SHAPES[path.name]
    gen = torch.Generator().manual_seed(0)
    for batch in (1, 3):
        x = torch.rand(batch, *model.input_shape, generator=gen) * 2 - 0.5
        assert_matches_ort(path, model, x)
    # samples are independent: a batch gives the same rows as one sample at a time
    x = torch.rand(4, *model.input_shape, generator=gen)
    with torch.no_grad():
        full = model(x)
        rows = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(full, rows, rtol=1e-5, atol=1e-5)
    assert aten_ops(model) <= ALLOWED_ATEN


@pytest.mark.skipif(not SHARED_NETS, reason="shared VNN-COMP benchmarks not present")
def test_flat_input_shape_override():
    path = BENCH / "mnistfc" / "mnist-net_256x2.onnx"
    assert onnx_input_shape(path) == (1, 784, 1)
    native, flat = load_onnx(path), load_onnx(path, input_shape=(784,))
    assert flat.input_shape == (784,) and flat.onnx_input_shape == (1, 784, 1)
    x = torch.rand(3, 784)
    with torch.no_grad():
        torch.testing.assert_close(flat(x), native(x.reshape(3, 784, 1)))
    acas = load_onnx(BENCH / "acasxu" / "ACASXU_run2a_1_1_batch_2000.onnx", input_shape=[5])
    assert acas.input_shape == (5,)
    assert_matches_ort(
        BENCH / "acasxu" / "ACASXU_run2a_1_1_batch_2000.onnx", acas, torch.randn(3, 5)
    )
    with pytest.raises(InputError, match="784"):
        load_onnx(path, input_shape=(780,))


@pytest.mark.skipif(not SHARED_NETS, reason="shared VNN-COMP benchmarks not present")
def test_wrong_input_shape_and_dtype_conversion():
    model = load_onnx(BENCH / "verivital" / "Convnet_maxpool.onnx")
    with pytest.raises(ShapeError, match=r"\[B, 1, 28, 28\]"):
        model(torch.rand(2, 784))
    double = model.double()
    assert double(torch.rand(2, 1, 28, 28, dtype=torch.float64)).dtype == torch.float64


# ---------------------------------------------------------------------------- synthetic graphs
def _init(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _save(tmp_path, nodes, inits, in_shape, out_shape, opset=13, name="m.onnx") -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _check(path: Path, expect_shape=None) -> torch.nn.Module:
    model = load_onnx(path)
    if expect_shape is not None:
        assert model.input_shape == expect_shape
    assert_matches_ort(path, model, torch.randn(3, *model.input_shape))
    ops = aten_ops(model)
    assert ops <= ALLOWED_ATEN, ops - ALLOWED_ATEN
    return model


def _rng(seed=0):
    return np.random.default_rng(seed)


def f32(a):
    return np.asarray(a, dtype=np.float32)


def test_conv_bn_tanh_reshape_transpose_concat(tmp_path):
    """A CNN as PyTorch exports it: Shape/Gather/Concat feed a Reshape with a hard-coded batch 1."""
    r = _rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node(
            "BatchNormalization", ["c1", "s", "bb", "mu", "var"], ["bn"], epsilon=1e-3
        ),
        helper.make_node("Tanh", ["bn"], ["t"]),
        helper.make_node("LeakyRelu", ["c1"], ["lr"], alpha=0.2),
        helper.make_node("Concat", ["t", "lr"], ["cat"], axis=1),
        helper.make_node("Transpose", ["cat"], ["tr"], perm=[0, 2, 3, 1]),
        helper.make_node("Shape", ["tr"], ["shp"]),
        helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["newshape"], axis=0),
        helper.make_node("Reshape", ["tr", "newshape"], ["flat"]),
        helper.make_node("Identity", ["flat"], ["flat2"]),
        helper.make_node("Gemm", ["flat2", "wf", "bf"], ["g"], alpha=0.5, beta=2.0, transB=0),
        helper.make_node("Mul", ["g", "scale"], ["y"]),
    ]
    inits = [
        _init("w1", f32(r.normal(size=(4, 3, 3, 3)))),
        _init("b1", f32(r.normal(size=4))),
        _init("s", f32(r.uniform(0.5, 2, 4))),
        _init("bb", f32(r.normal(size=4))),
        _init("mu", f32(r.normal(size=4))),
        _init("var", f32(r.uniform(0.5, 2, 4))),
        _init("zero", np.array(0, dtype=np.int64)),
        _init("zero1", np.array([0], dtype=np.int64)),
        _init("minus1", np.array([-1], dtype=np.int64)),
        _init("wf", f32(r.normal(size=(8 * 4 * 4, 5)))),
        _init("bf", f32(r.normal(size=(1, 5)))),
        _init("scale", f32(r.normal(size=(5,)))),
    ]
    path = _save(tmp_path, nodes, inits, [1, 3, 8, 8], [1, 5])
    model = _check(path, (3, 8, 8))
    assert model.output_size == 5


def test_sub_div_matmul_chains_and_unbatched_input(tmp_path):
    """Input without a batch axis ([6]), Sub/Div with constant first, left MatMul."""
    r = _rng(2)
    nodes = [
        helper.make_node("Sub", ["c0", "x"], ["a"]),
        helper.make_node("Div", ["a", "c1"], ["b"]),
        helper.make_node("MatMul", ["w1", "b"], ["h"]),  # [4,6] @ [6] -> [4]
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Unsqueeze", ["hr", "ax"], ["col"]),  # [4,1]
        helper.make_node("MatMul", ["w2", "col"], ["h2"]),  # [3,4] @ [4,1] -> [3,1]
        helper.make_node("Sigmoid", ["h2"], ["s"]),
        helper.make_node("Squeeze", ["s", "ax"], ["sq"]),  # [3]
        helper.make_node("MatMul", ["sq", "w3"], ["y"]),  # [3] @ [3,2] -> [2]
    ]
    inits = [
        _init("c0", f32(r.normal(size=6))),
        _init("c1", f32(r.uniform(1, 2, size=(6,)))),
        _init("w1", f32(r.normal(size=(4, 6)))),
        _init("ax", np.array([1], dtype=np.int64)),
        _init("w2", f32(r.normal(size=(3, 4)))),
        _init("w3", f32(r.normal(size=(3, 2)))),
    ]
    path = _save(tmp_path, nodes, inits, [6], [2])
    model = _check(path, (6,))
    assert model.output_size == 2


def test_pooling_padding_variants(tmp_path):
    r = _rng(3)
    nodes = [
        # asymmetric explicit pads -> F.pad before the convolution
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[0, 1, 2, 1]),
        helper.make_node("Relu", ["c"], ["cr"]),
        helper.make_node("Pad", ["cr", "pads", "val"], ["p"], mode="constant"),
        helper.make_node(
            "AveragePool",
            ["p"],
            ["ap"],
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            count_include_pad=0,
        ),
        helper.make_node(
            "AveragePool",
            ["ap"],
            ["ap2"],
            kernel_shape=[2, 2],
            pads=[0, 0, 1, 1],
            count_include_pad=1,
        ),
        helper.make_node(
            "MaxPool", ["ap2"], ["mp"], kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 1, 1]
        ),
        helper.make_node(
            "Conv", ["mp", "w2", "b2"], ["c2"], auto_pad="SAME_UPPER", strides=[2, 2], group=2
        ),
        helper.make_node("GlobalAveragePool", ["c2"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["y"]),
    ]
    inits = [
        _init("w", f32(r.normal(size=(2, 1, 3, 3)))),
        _init("pads", np.array([0, 0, 1, 2, 0, 0, 2, 1], dtype=np.int64)),
        _init("val", f32(0.5)),
        _init("w2", f32(r.normal(size=(4, 1, 3, 3)))),
        _init("b2", f32(r.normal(size=4))),
    ]
    path = _save(tmp_path, nodes, inits, [1, 1, 12, 11], [1, 4])
    _check(path, (1, 12, 11))


def test_pool_ceil_mode_and_conv1d(tmp_path):
    r = _rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], strides=[2]),  # conv1d
        helper.make_node("Unsqueeze", ["c", "ax"], ["c4"]),  # [1, 3, 1, L]
        helper.make_node(
            "MaxPool", ["c4"], ["m"], kernel_shape=[1, 3], strides=[1, 2], ceil_mode=1
        ),
        helper.make_node(
            "AveragePool", ["m"], ["a"], kernel_shape=[1, 2], strides=[1, 2], ceil_mode=1
        ),
        helper.make_node("Flatten", ["a"], ["y"]),
    ]
    inits = [
        _init("w", f32(r.normal(size=(3, 2, 3)))),
        _init("ax", np.array([2], dtype=np.int64)),
    ]
    path = _save(tmp_path, nodes, inits, [1, 2, 21], [1, 9])
    assert _check(path, (2, 21)).output_size == 9  # 10 -> 5 -> 3 positions thanks to ceil_mode


def test_old_opsets_and_dynamic_batch_axis(tmp_path):
    """Opset 9 (Pad and Unsqueeze with attributes, Gemm with a full-matrix C) and batch 'N'."""
    r = _rng(5)
    nodes = [
        helper.make_node("Pad", ["x"], ["p"], pads=[0, 1, 0, 2], value=1.5),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w", "c"], ["g"], transB=1),
        helper.make_node("Dropout", ["g"], ["y"]),
    ]
    inits = [_init("w", f32(r.normal(size=(3, 8)))), _init("c", f32(r.normal(size=(1, 3))))]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 4
    path = tmp_path / "old.onnx"
    onnx.save(model, str(path))
    _check(path, (5,))


# ---------------------------------------------------------------------------- errors
def _tiny_with(tmp_path, op_type: str, **attrs) -> Path:
    nodes = [
        helper.make_node("Relu", ["x"], ["h"], name="first_relu"),
        helper.make_node(op_type, ["h"], ["y"], name="the_bad_node", **attrs),
    ]
    return _save(tmp_path, nodes, [], [1, 4], [1, 4], name=f"{op_type}.onnx")


@pytest.mark.parametrize("op_type,attrs", [("Sign", {}), ("ReduceMax", {"keepdims": 0})])
def test_unsupported_op_is_named(tmp_path, op_type, attrs):
    path = _tiny_with(tmp_path, op_type, **attrs)
    with pytest.raises(UnsupportedOperationError) as info:
        load_onnx(path)
    msg = str(info.value)
    assert op_type in msg and "the_bad_node" in msg and "Supported operators" in msg
    assert "Gemm" in msg and "Conv" in msg
    assert info.value.op == op_type
    assert isinstance(info.value, TypeError)


def test_unsupported_configurations(tmp_path):
    r = _rng(6)
    two_dynamic = _save(
        tmp_path, [helper.make_node("MatMul", ["x", "x"], ["y"], name="mm")], [], [4, 4], [4, 4],
        name="mm.onnx",
    )  # fmt: skip
    with pytest.raises(UnsupportedOperationError, match="two tensors computed"):
        load_onnx(two_dynamic)
    reflect = _save(
        tmp_path,
        [helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")],
        [_init("pads", np.array([0, 1, 0, 1], dtype=np.int64))],
        [1, 4],
        [1, 6],
        name="reflect.onnx",
    )
    with pytest.raises(UnsupportedOperationError, match="reflect"):
        load_onnx(reflect)
    const_concat = _save(
        tmp_path,
        [helper.make_node("Concat", ["x", "c"], ["y"], axis=1)],
        [_init("c", f32(r.normal(size=(1, 2))))],
        [1, 4],
        [1, 6],
        name="cc.onnx",
    )
    with pytest.raises(UnsupportedOperationError, match="constant operand"):
        load_onnx(const_concat)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_onnx(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf \x00\xff")
    with pytest.raises(InputError, match="junk.onnx"):
        load_onnx(junk)
    two_in = helper.make_model(
        helper.make_graph(
            [helper.make_node("Add", ["a", "b"], ["y"])],
            "g",
            [
                helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 2]),
                helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 2]),
            ],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        ),
        opset_imports=[helper.make_opsetid("", 13)],
    )
    onnx.save(two_in, str(tmp_path / "two.onnx"))
    with pytest.raises(InputError, match="exactly one input"):
        load_onnx(tmp_path / "two.onnx")


def test_supported_ops_cover_the_brief():
    needed = {
        "Add", "AveragePool", "Constant", "Conv", "Div", "Flatten", "Gemm", "MatMul", "MaxPool",
        "Pad", "Relu", "Sigmoid", "Sub", "Reshape", "Transpose", "BatchNormalization", "Tanh",
        "Concat", "Identity", "Mul", "LeakyRelu",
    }  # fmt: skip
    assert needed <= set(SUPPORTED_OPS)


def test_axes_that_are_not_the_batch_axis(tmp_path):
    """Input [4, 3] whose first axis is data: transposes and concats over it stay per sample."""
    r = _rng(7)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"]),  # [3, 4]
        helper.make_node("Concat", ["t", "t"], ["c"], axis=0),  # [6, 4]
        helper.make_node("LeakyRelu", ["c"], ["lr"]),
        helper.make_node("MatMul", ["lr", "v"], ["m"]),  # [6]
        helper.make_node("Unsqueeze", ["m", "ax"], ["u"]),  # [1, 6]
        helper.make_node("Gemm", ["u", "w", "b"], ["g"], transB=1),  # [1, 5]
        helper.make_node("BatchNormalization", ["g", "s", "bb", "mu", "var"], ["bn"]),
        helper.make_node("Reshape", ["bn", "shape"], ["y"]),  # [5]
    ]
    inits = [
        _init("v", f32(r.normal(size=4))),
        _init("ax", np.array([0], dtype=np.int64)),
        _init("w", f32(r.normal(size=(5, 6)))),
        _init("b", f32(r.normal(size=5))),
        _init("s", f32(r.uniform(0.5, 2, 5))),
        _init("bb", f32(r.normal(size=5))),
        _init("mu", f32(r.normal(size=5))),
        _init("var", f32(r.uniform(0.5, 2, 5))),
        _init("shape", np.array([5], dtype=np.int64)),
    ]
    path = _save(tmp_path, nodes, inits, [4, 3], [5])
    model = _check(path, (4, 3))
    assert model.output_size == 5


# ------------------------------------------------------------- element-wise ops (session 14)
_ELEMENTWISE = [  # (op type, attributes): each on its own branch of a small MLP
    ("Neg", {}), ("Abs", {}), ("Exp", {}), ("Sin", {}), ("Cos", {}), ("Erf", {}),
    ("Atan", {}), ("Softplus", {}), ("Softsign", {}), ("Elu", {"alpha": 0.7}),
    ("Celu", {"alpha": 1.3}), ("Selu", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
    ("HardSwish", {}), ("Mish", {}), ("Sigmoid", {}), ("LeakyRelu", {"alpha": 0.2}),
]


def _elementwise_net(tmp_path, opset=18):
    """x [1, 4] -> Gemm -> each element-wise op, then Sqrt / Log / Reciprocal of positive
    values, Clip, Sum / Max / Min of branches, Softmax and LogSoftmax, concatenated."""
    g = _rng(7)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1)]
    outs = []
    for i, (op, attrs) in enumerate(_ELEMENTWISE):
        nodes.append(helper.make_node(op, ["h"], [f"u{i}"], **attrs))
        outs.append(f"u{i}")
    nodes += [
        helper.make_node("Mul", ["h", "h"], ["sq"]),
        helper.make_node("Add", ["sq", "one"], ["pos"]),
        helper.make_node("Sqrt", ["pos"], ["s1"]), helper.make_node("Log", ["pos"], ["s2"]),
        helper.make_node("Reciprocal", ["pos"], ["s3"]),
        helper.make_node("Clip", ["h", "lo", "hi"], ["c1"]),
        helper.make_node("Sum", ["u0", "u1", "u2"], ["v1"]),
        helper.make_node("Max", ["u3", "u4", "half"], ["v2"]),
        helper.make_node("Min", ["u5", "u6"], ["v3"]),
        helper.make_node("Softmax", ["h"], ["p1"], axis=-1),
        helper.make_node("LogSoftmax", ["h"], ["p2"], axis=1),
    ]
    outs += ["s1", "s2", "s3", "c1", "v1", "v2", "v3", "p1", "p2"]
    nodes.append(helper.make_node("Concat", outs, ["y"], axis=1))
    inits = [_init("w", f32(g.normal(size=(6, 4)))), _init("b", f32(g.normal(size=6))),
             _init("one", f32([1.0])), _init("lo", f32(-0.5)), _init("hi", f32(0.7)),
             _init("half", f32([0.5]))]
    return _save(tmp_path, nodes, inits, [1, 4], [1, 6 * len(outs)], opset=opset)


def test_elementwise_ops_match_onnxruntime_and_bound_soundly(tmp_path):
    path = _elementwise_net(tmp_path)
    model = load_onnx(path)
    assert_matches_ort(path, model, torch.randn(5, *model.input_shape))
    x = torch.rand(4)
    lo, up = lipbound.output_bounds(model, x, 0.1)
    pts = x + 0.1 * (2 * torch.rand(2000, 4, generator=torch.Generator().manual_seed(0)) - 1)
    pts[:1000] = x + 0.1 * torch.sign(pts[:1000] - x)
    with torch.no_grad():
        y = model(pts).double()
    assert (y >= lo).all() and (y <= up).all()


def test_softmax_over_the_batch_axis_and_old_opset_axes_are_refused(tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Softmax", ["r"], ["y"], axis=1)]
    inits = [_init("shape", np.array([1, 2, 2], dtype=np.int64))]
    path = _save(tmp_path, nodes, inits, [1, 4], [1, 2, 2], opset=11)
    with pytest.raises(UnsupportedOperationError, match="opset 11"):
        load_onnx(path)
    nodes[1] = helper.make_node("Softmax", ["r"], ["y"], axis=0)
    path = _save(tmp_path, nodes, inits, [1, 4], [1, 2, 2], opset=13, name="b.onnx")
    with pytest.raises(UnsupportedOperationError, match="batch axis"):
        load_onnx(path)


def test_slice_and_gather_with_constant_indices(tmp_path):
    """Slice (steps, negative ends) and Gather (a 2-d index with repeats and a negative one)
    on a computed tensor match onnxruntime, and their bounds contain sampled outputs."""
    g = _rng(8)
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
        helper.make_node("Slice", ["h", "st", "en", "ax", "sp"], ["s"]),
        helper.make_node("Gather", ["h", "idx"], ["gt"], axis=1),
        helper.make_node("Reshape", ["gt", "shape"], ["g2"]),
        helper.make_node("Relu", ["g2"], ["r"]),
        helper.make_node("Concat", ["s", "r"], ["y"], axis=1),
    ]
    def ints(*v):
        return np.array(v, dtype=np.int64)

    inits = [_init("w", f32(g.normal(size=(8, 4)))), _init("b", f32(g.normal(size=8))),
             _init("st", ints(1)), _init("en", ints(-1)), _init("ax", ints(1)),
             _init("sp", ints(2)), _init("idx", ints([0, 5], [7, -1])),
             _init("shape", ints(1, 4))]
    path = _save(tmp_path, nodes, inits, [1, 4], [1, 7])
    model = load_onnx(path)
    assert_matches_ort(path, model, torch.randn(5, *model.input_shape))
    x = torch.rand(4)
    lo, up = lipbound.output_bounds(model, x, 0.1)
    pts = x + 0.1 * torch.sign(torch.rand(500, 4, generator=torch.Generator().manual_seed(1)) - 0.5)
    with torch.no_grad():
        y = model(pts).double()
    assert (y >= lo).all() and (y <= up).all()
