"""Every model source of the CLI gives the same bounds as the in-memory model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lipbound
from lipbound.cli import main
from lipbound.io.model_source import load_model
from lipbound.report.provenance import model_hash
from tests.models import mlp

EPS = 0.05


def _onnx_mlp(model: torch.nn.Module, path) -> None:
    """Write ``model`` (Flatten, then Linear/ReLU layers) as an ONNX Gemm/Relu graph."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, cur = [], [], "x"
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    for i, lin in enumerate(linears):
        inits += [numpy_helper.from_array(lin.weight.detach().numpy(), f"W{i}"),
                  numpy_helper.from_array(lin.bias.detach().numpy(), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [cur, f"W{i}", f"b{i}"], [f"g{i}"], transB=1))
        cur = f"g{i}"
        if i < len(linears) - 1:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"]))
            cur = f"r{i}"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sources")
    model = mlp((4, 8, 8, 3), seed=5)  # differs from the factory's default seed 0
    torch.save(model.state_dict(), d / "w.pt")
    ep = torch.export.export(model, (torch.rand(2, 4),),
                             dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, str(d / "m.pt2"))
    torch.export.save(torch.export.export(model, (torch.rand(1, 4),)), str(d / "static.pt2"))
    _onnx_mlp(model, d / "m.onnx")
    X = np.random.default_rng(0).uniform(-1, 1, (3, 4)).astype(np.float32)
    np.save(d / "x.npy", X)
    return model, X, d


def _bounds(capsys, model_args: list[str], inputs) -> dict:
    argv = ["bound", *model_args, "--inputs", str(inputs), "--index", "1", "--eps", str(EPS),
            "--norm", "2", "--lipschitz-method", "none", "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)["records"][0]


@pytest.mark.parametrize("source", ["factory", "pt2", "onnx"])
def test_each_source_gives_the_in_memory_bounds(capsys, files, source):
    model, X, d = files
    args = {"factory": ["--model", "tests.models:mlp", "--state-dict", str(d / "w.pt")],
            "pt2": ["--model", str(d / "m.pt2")], "onnx": ["--model", str(d / "m.onnx")]}
    rec = _bounds(capsys, args[source], d / "x.npy")
    lo, up = lipbound.output_bounds(model, torch.from_numpy(X[1]), EPS, norm=2)
    tol = 1e-6 if source == "onnx" else 1e-12
    np.testing.assert_allclose(rec["lower"], lo.tolist(), rtol=tol, atol=tol)
    np.testing.assert_allclose(rec["upper"], up.tolist(), rtol=tol, atol=tol)
    if source != "onnx":  # ONNX renames the parameters
        assert rec["model"]["hash"] == model_hash(model)


def test_registry_source_matches_in_memory_model(capsys, tmp_path):
    from lipbound.models.digits import digits_data

    X = digits_data()[2][:2].numpy()
    np.save(tmp_path / "d.npy", X)
    rec = _bounds(capsys, ["--model", "digits-mlp"], tmp_path / "d.npy")
    lo, up = lipbound.output_bounds(lipbound.models.load("digits-mlp"), torch.from_numpy(X[1]),
                                    EPS, norm=2)
    assert rec["lower"] == lo.tolist() and rec["upper"] == up.tolist()
    assert rec["domain"]["data_range"] is None  # a plain file has no data range


def test_python_file_factory(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh())\n")
    loaded = load_model(f"{tmp_path / 'net.py'}:build")
    assert loaded.source == "factory" and not loaded.module.training


@pytest.mark.parametrize("make, argv_model, message", [
    (lambda d: (d / "junk.pt2").write_text("not a model"), "junk.pt2", "not a torch.export"),
    (lambda d: (d / "junk.onnx").write_bytes(b"\x00\x01garbage"), "junk.onnx", "ONNX"),
    (lambda d: (d / "w.pth").write_text("x"), "w.pth", "not a model file"),
    (lambda d: None, "missing.pt2", "does not exist"),
    (lambda d: None, "tests.models:no_such_factory", "no callable"),
    (lambda d: None, "no_such_module_xyz:f", "cannot import"),
])
def test_bad_model_sources_exit_2(capsys, tmp_path, monkeypatch, make, argv_model, message):
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    assert main(["bound", "--model", argv_model, "--inputs", "digits"]) == 2
    assert message in capsys.readouterr().err


def test_static_batch_export_and_wrong_state_dict_are_explained(capsys, files):
    _, _, d = files
    assert main(["bound", "--model", str(d / "static.pt2"), "--inputs", str(d / "x.npy")]) == 2
    assert "dynamic batch dimension" in capsys.readouterr().err
    assert main(["bound", "--model", "tests.models:SmallCNN", "--state-dict", str(d / "w.pt"),
                 "--inputs", str(d / "x.npy")]) == 2
    assert "does not fit" in capsys.readouterr().err
