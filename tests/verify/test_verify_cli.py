"""``lipbound verify`` / ``verify-instances`` exit codes and the VNN-COMP verdict files."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from lipbound.cli import main  # noqa: E402
from lipbound.errors import InputError  # noqa: E402
from lipbound.report.verdicts import (  # noqa: E402
    ResultRow,
    append_result,
    format_counterexample,
    read_counterexample,
    read_result_file,
    read_results,
    write_result_file,
    write_results,
)
from tests.verify_nets import box_text, forward, tiny_net  # noqa: E402

UNSAT = "(assert (>= Y_0 5))"
SAT = "(assert (>= Y_0 1.9))"


@pytest.fixture()
def files(tmp_path):
    net = tiny_net(tmp_path / "tiny.onnx")
    (tmp_path / "unsat.vnnlib").write_text(box_text(UNSAT))
    (tmp_path / "sat.vnnlib").write_text(box_text(SAT))
    return tmp_path, net


def test_verify_unsat_exit_0_and_result_file(files, capsys):
    d, net = files
    out = d / "unsat.txt"
    assert main(["verify", str(net), str(d / "unsat.vnnlib"), "--timeout", "30",
                 "--counterexample", str(out)]) == 0
    assert capsys.readouterr().out.startswith("unsat ")
    assert read_result_file(out) == ("unsat", None)


def test_verify_sat_writes_a_checkable_counterexample(files, capsys):
    d, net = files
    out = d / "sat.txt"
    assert main(["verify", str(net), str(d / "sat.vnnlib"), "--timeout", "30", "--json",
                 "--counterexample", str(out)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["verdict"] == "sat"
    x, y = read_counterexample(out)
    assert x.tolist() == record["counterexample"]["x"]
    assert bool(((x >= -1) & (x <= 1)).all()) and float(y[0]) >= 1.9
    np.testing.assert_allclose(forward(x.numpy()[None])[0], y.numpy(), atol=1e-5)


def test_verify_undecided_exit_3_and_errors_exit_2(files, capsys):
    d, net = files
    assert main(["verify", str(net), str(d / "unsat.vnnlib"), "--timeout", "0.001"]) == 3
    assert capsys.readouterr().out.startswith("timeout ")
    assert main(["verify", str(d / "missing.onnx"), str(d / "sat.vnnlib"),
                 "--timeout", "5"]) == 2
    assert "not found" in capsys.readouterr().err
    (d / "bad.vnnlib").write_text("(declare-const X_0 Real)\n(assert (<= X_0 1)\n")
    assert main(["verify", str(net), str(d / "bad.vnnlib"), "--timeout", "5"]) == 2
    assert "unbalanced" in capsys.readouterr().err


def test_verify_instances_runs_a_csv(files, capsys):
    d, net = files
    sub = d / "specs"
    sub.mkdir()
    (sub / "sat.vnnlib.gz").write_bytes(gzip.compress(box_text(SAT).encode()))
    (d / "instances.csv").write_text(
        "tiny.onnx,unsat.vnnlib,30\ntiny.onnx,specs/sat.vnnlib,30\nother.onnx,sat.vnnlib,30\n")
    out = d / "res" / "results.csv"
    out.parent.mkdir()
    assert main(["verify-instances", str(d), "--out", str(out), "--timeout-scale", "0.5"]) == 3
    rows = read_results(out)
    assert [(r.onnx, r.vnnlib, r.result) for r in rows] == [
        ("tiny.onnx", "unsat.vnnlib", "unsat"), ("tiny.onnx", "specs/sat.vnnlib", "sat"),
        ("other.onnx", "sat.vnnlib", "error")]
    assert all(r.timeout == 15.0 for r in rows)
    x, y = read_counterexample(d / "res" / "results_counterexamples" / "tiny__sat.vnnlib.txt")
    assert float(y[0]) >= 1.9 and x.shape == (2,)
    assert "missing file other.onnx" in capsys.readouterr().err
    assert main(["verify-instances", str(d / "instances.csv"), "--out", str(out),
                 "--skip-missing", "--limit", "1"]) == 0
    assert [r.result for r in read_results(out)] == ["unsat"]


def test_results_csv_and_counterexample_round_trip(tmp_path):
    rows = [ResultRow("a.onnx", "p.vnnlib", 60.0, "unsat", 1.25, 0.5),
            ResultRow("b.onnx", "q.vnnlib", 60.0, "timeout", 60.0)]
    write_results(tmp_path / "r.csv", rows)
    assert read_results(tmp_path / "r.csv") == rows
    append_result(tmp_path / "s.csv", rows[0])
    append_result(tmp_path / "s.csv", rows[1])
    assert read_results(tmp_path / "s.csv") == rows
    (tmp_path / "bare.csv").write_text("a.onnx,p.vnnlib,60,sat,2.5\n")
    assert read_results(tmp_path / "bare.csv")[0].result == "sat"
    with pytest.raises(InputError):
        ResultRow("a", "b", 1.0, "holds", 1.0)
    x = torch.tensor([0.1, -1 / 3], dtype=torch.float32).double()
    y = torch.tensor([1e-30, 2.5], dtype=torch.float64)
    text = format_counterexample(x, y)
    assert text.splitlines()[0] == "sat" and "(X_1 " in text and text.endswith("))\n")
    write_result_file(tmp_path / "c.txt", "sat", (x, y))
    x2, y2 = read_counterexample(tmp_path / "c.txt")
    assert torch.equal(x2, x) and torch.equal(y2, y)  # bit-exact
    (tmp_path / "bad.txt").write_text("sat\n((X_0 1.0)\n (X_2 2.0)\n (Y_0 0.5))\n")
    with pytest.raises(InputError, match="X_i"):
        read_counterexample(tmp_path / "bad.txt")
    with pytest.raises(InputError, match="needs the counterexample"):
        write_result_file(tmp_path / "d.txt", "sat")
