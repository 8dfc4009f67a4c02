"""Bad input on the command line: a clear message, exit code 2, nothing half-written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lipbound.cli import main

FAST = ["--lipschitz-method", "none", "--method", "ibp"]


@pytest.mark.parametrize("argv, message", [
    (["bound", "--inputs", "missing.npy"], "does not exist"),
    (["bound", "--inputs", "nonsense"], "neither a .npy/.npz/.pt file nor a data set"),
    (["bound", "--inputs", "digits:validation"], "split must be 'train' or 'test'"),
    (["bound", "--index", "5000"], "the inputs have 450 rows"),
    (["bound", "--index", "a:b"], "expected 'all'"),
    (["bound", "--norm", "3"], "norm must be inf, 2 or 1"),
    (["bound", "--eps", "-1"], "eps"),
    (["bound", "--method", "magic"], "magic"),
    (["bound", "--data-range", "1", "0"], "LO must be <= HI"),
    (["bound", "--state-dict", "w.pt"], "--state-dict goes with a module:factory"),
    (["bound", "--model", "diabetes-mlp", "--spec", "margin", "--inputs", "diabetes"],
     "at least 2 outputs"),
    (["audit", "monotonicity", "--lower", "0", "0", "--upper", "1"],
     "--lower has 2 values and --upper 1"),
    (["audit", "monotonicity", "--lower", *["0"] * 10, "--upper", "1", "-1", *["1"] * 8],
     "lower > upper for feature 1"),
    (["audit", "monotonicity", "--lower", "0", "--upper", "1"], "takes 10"),
    (["audit", "monotonicity", "--features", "12"], "must lie in 0..9"),
    (["report", "missing.jsonl"], "does not exist"),
])
def test_bad_input_exits_2_with_a_clear_message(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    if argv[0] == "bound":  # fast methods; a method given by the case comes later and wins
        argv = [argv[0], *FAST, *argv[1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lipbound: error:") and message in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_wrong_input_shape_exits_2(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 5), dtype=np.float32))
    assert main(["bound", "--inputs", str(tmp_path / "x.npy"), *FAST]) == 2
    assert "the model expects [64]" in capsys.readouterr().err
    np.save(tmp_path / "y.npy", np.zeros(3))
    assert main(["bound", "--inputs", "digits", "--labels", str(tmp_path / "y.npy")]) == 2
    assert "3 labels for 450 inputs" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["no_dir/out.jsonl", "file.txt/out.json", "."])
def test_unwritable_output_exits_2_before_any_work(capsys, tmp_path, monkeypatch, target):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    assert main(["bound", "--output", target, *FAST]) == 2
    assert "lipbound: error:" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_demo_report_path_is_checked_first(capsys, tmp_path):
    assert main(["demo", "--report", str(tmp_path / "no" / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_rejects_invalid_records_and_writes_nothing(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"schema_version": "lipbound.report/1", "kind": "lipschitz"}) + "\n")
    out = tmp_path / "r.html"
    assert main(["report", str(bad), "-o", str(out)]) == 2
    assert "record 0" in capsys.readouterr().err and not out.exists()
    assert main(["report", str(bad), "-o", str(tmp_path / "r.txt")]) == 2
    assert ".html or .md" in capsys.readouterr().err


def test_argparse_usage_errors_exit_2():
    with pytest.raises(SystemExit) as exc:
        main(["bound", "--eps", "abc"])
    assert exc.value.code == 2
