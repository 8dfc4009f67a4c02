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


# --- the must-show bad inputs, on every subcommand that meets them ----------------------------

CERTIFY = ["certify", "--n0", "10", "--n", "50", "--threads", "1", "--no-progress"]
MONO = ["audit", "monotonicity", "--features", "2", "--timeout", "2"]
ROBUST = ["audit", "robustness", "--index", "0", "--eps-max", "0.01", "--no-attack"]
LOWER_GT_UPPER = ["--lower", *["0"] * 10, "--upper", *["1"] * 9, "-1"]


@pytest.mark.parametrize("argv, message", [
    # a file that is not a model (text, a saved tensor, a state dict without its factory)
    (["bound", "--model", "notes.txt", *FAST], "notes.txt is not a model file"),
    ([*MONO, "--model", "tensor.pt"], "tensor.pt is not a model file"),
    ([*ROBUST, "--model", "state.pt"], "state.pt is not a model file"),
    ([*CERTIFY, "--model", "tensor.pt", "--sigma", "0.25"], "tensor.pt is not a model file"),
    (["demo", "--model", "notes.txt"], "notes.txt is not a model file"),
    # a missing data file
    ([*MONO, "--inputs", "missing.npy"], "input file missing.npy does not exist"),
    ([*ROBUST, "--inputs", "missing.npy"], "input file missing.npy does not exist"),
    ([*CERTIFY, "--model", "digits-smooth-0.25", "--data", "missing.npy"],
     "input file missing.npy does not exist"),
    (["bound", *FAST, "--labels", "missing.npy", "--inputs", "digits"], "missing.npy"),
    (["report", "missing.jsonl", "-o", "r.html"], "result file missing.jsonl does not exist"),
    # a feature index out of range
    ([*MONO[:2], "--features", "0,10", "--output", "m.json"], "must lie in 0..9"),
    ([*MONO[:2], "--features", "-1", "--output", "m.jsonl"], "must lie in 0..9"),
    # lower > upper
    ([*MONO[:2], *LOWER_GT_UPPER, "--output", "m.json"], "lower > upper for feature 9"),
    ([*ROBUST, "--data-range", "1", "0", "--output", "r.json"], "LO must be <= HI"),
    # an output that cannot be written (missing folder, a file as folder, a folder as file)
    ([*MONO, "--output", "no_dir/m.json"], "directory no_dir does not exist"),
    ([*MONO, "--output", "notes.txt/m.jsonl"], "notes.txt is not a directory"),
    ([*ROBUST, "--output", "no_dir/r.jsonl"], "directory no_dir does not exist"),
    ([*CERTIFY, "--model", "digits-smooth-0.25", "--tsv", "no_dir/c.tsv"], "does not exist"),
    ([*CERTIFY, "--model", "digits-smooth-0.25", "--json", "notes.txt/c.json"],
     "notes.txt is not a directory"),
    ([*CERTIFY, "--model", "digits-smooth-0.25", "--tsv", "."], "is a directory"),
    (["report", "notes.txt", "-o", "no_dir/r.html"], "directory no_dir does not exist"),
    (["demo", "--report", "notes.txt/r.html"], "notes.txt is not a directory"),
    # bad settings found only once the run starts: no header-only TSV, no partial JSON
    ([*CERTIFY, "--model", "digits-smooth-0.25", "--n", "0", "--tsv", "c.tsv", "--json",
      "c.json"], "n must be an integer >= 1"),
])
def test_must_show_bad_inputs_leave_nothing_behind(capsys, tmp_path, monkeypatch, argv, message):
    import torch

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a model\n")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"0.weight": torch.zeros(2, 2)}, tmp_path / "state.pt")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lipbound: error:") and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial or temp files
