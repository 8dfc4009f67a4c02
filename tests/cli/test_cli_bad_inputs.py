"""Bad input on the command line (issue 14): exit code 2, a message on stderr that says what is
wrong, and no output file left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lipbound.cli import main

FAST = ["--method", "ibp", "--lipschitz-method", "none"]
FLAT = "tests.api.test_bad_inputs:flat_mlp"  # 2 -> 2 networks (factories of the API tests)
HALF = "tests.api.test_bad_inputs:half_mlp"


@pytest.fixture()
def work(tmp_path, monkeypatch):
    """(folder of input files, empty working folder that must stay empty)."""
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "x2.npy", np.random.default_rng(0).uniform(-1, 1, (3, 2)).astype(np.float32))
    np.save(data / "x5.npy", np.zeros((3, 5), dtype=np.float32))
    np.save(data / "y.npy", np.array([0, 1, 0]))
    (data / "binary.toml").write_bytes(bytes(range(128, 256)))
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    return data, out


def run(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["bound", "--model", FLAT, "--inputs", "{d}/x2.npy", "--eps", "1e308", *FAST],
     "bounds overflow: output bounds are not finite at eps 1e+308"),
    (["bound", "--model", FLAT, "--inputs", "{d}/x2.npy", "--eps", "1e308"],
     "bounds overflow"),
    (["bound", "--model", FLAT, "--inputs", "{d}/x2.npy", "--data-range", "nan", "1", *FAST],
     "--data-range: LO and HI must be finite numbers"),
    (["bound", "--model", FLAT, "--inputs", "{d}/x2.npy", "--timeout", "nan"],
     "timeout must be a finite number of seconds > 0"),
    (["bound", "--model", FLAT, "--inputs", "{d}/x2.npy", "--eps", "nan", *FAST],
     "eps must be a finite number >= 0"),
    (["bound", "--model", FLAT, "--inputs", "{d}/x5.npy", *FAST],
     "x of shape [5] does not fit the model"),
    (["bound", "--model", HALF, "--inputs", "{d}/x2.npy", *FAST],
     "float16 weights (e.g. '0.weight'); lipbound's bounds need float32 or float64 weights: "
     "convert the model with model.float()"),
    (["bound", "--config", "{d}/binary.toml"], "is not a UTF-8 text file"),
    (["audit", "monotonicity", "--config", "{d}/binary.toml"], "is not a UTF-8 text file"),
    (["bound", "--index", "2:999", *FAST], "--index '2:999' goes past the last row: the inputs "
                                          "have 450 rows (0..449)"),
    (["bound", "--model", FLAT, "--inputs", "{d}/x2.npy", "--index", "1:4", *FAST],
     "the inputs have 3 rows"),
    (["audit", "robustness", "--model", FLAT, "--inputs", "{d}/x5.npy", "--labels", "{d}/y.npy"],
     "does not fit the model"),
    (["audit", "robustness", "--model", HALF, "--inputs", "{d}/x2.npy", "--labels", "{d}/y.npy"],
     "float16 weights"),
    (["audit", "monotonicity", "--model", HALF, "--lower", "0", "0", "--upper", "1", "1"],
     "float16 weights"),
    (["certify", "--model", FLAT, "--inputs", "{d}/x5.npy", "--sigma", "0.5", "--n", "10"],
     "x of shape [5] does not fit the model"),
    (["certify", "--model", "digits-smooth-0.25", "--indices", "440:460", "--n", "10"],
     "the inputs have 450 rows"),
])
@pytest.mark.parametrize("output", ["r.jsonl", "r.json"])
def test_bad_input_exits_2_and_writes_nothing(capsys, work, argv, message, output):
    data, out = work
    argv = [a.replace("{d}", str(data)) for a in argv]
    if argv[0] == "certify":
        argv += ["--json" if output.endswith(".json") else "--tsv", output]
    else:
        argv += ["--output", output]
    code, err = run(capsys, argv)
    assert code == 2, err
    assert err.startswith("lipbound: error:") and message in err
    assert "Traceback" not in err
    assert list(out.iterdir()) == []  # no output file, not even an empty or partial one


def test_default_index_range_still_fits_small_inputs(capsys, work):
    """A subcommand's default --index (robustness: 0:20) stops at the last row of a 3-row file,
    where the same range given explicitly is an error."""
    data, out = work
    base = ["audit", "robustness", "--model", FLAT, "--inputs", str(data / "x2.npy"),
            "--labels", str(data / "y.npy"), "--methods", "bounds", "--no-attack",
            "--eps-max", "0.05", "--json"]
    assert main(base) == 0
    assert len(json.loads(capsys.readouterr().out)["records"]) == 3
    code, err = run(capsys, [*base, "--index", "0:20"])
    assert code == 2 and "the inputs have 3 rows" in err


def test_certify_runs_a_float16_base_classifier(capsys, work):
    """Cohen's certificate holds for the classifier as it computes, float16 included: the CLI
    feeds it inputs of its dtype (torch's dtype error before)."""
    data, _ = work
    assert main(["certify", "--model", HALF, "--inputs", str(data / "x2.npy"), "--labels",
                 str(data / "y.npy"), "--sigma", "0.5", "--n0", "10", "--n", "20"]) == 0
    assert "certified 3 inputs" in capsys.readouterr().out


@pytest.fixture()
def vnn(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from tests.verify_nets import box_text, tiny_net

    net = tiny_net(tmp_path / "tiny.onnx")
    (tmp_path / "p.vnnlib").write_text(box_text("(assert (>= Y_0 5))"))
    (tmp_path / "empty.vnnlib").write_text(box_text("(assert (>= Y_0 5))", lo=1.0, hi=-1.0))
    return tmp_path, net


@pytest.mark.parametrize("target, message", [
    ("missing/cex.txt", "directory {d}/missing does not exist"),
    (".", "is a directory; give a file name"),
])
def test_verify_checks_the_counterexample_path_before_the_run(capsys, monkeypatch, vnn, target,
                                                              message):
    d, net = vnn
    ran = []
    monkeypatch.setattr("lipbound.verify.verify", lambda *a, **k: ran.append(a))
    code = main(["verify", str(net), str(d / "p.vnnlib"), "--timeout", "30",
                 "--counterexample", str(d / target)])
    out, err = capsys.readouterr()
    assert code == 2 and message.format(d=d) in err
    assert ran == [] and out == ""  # refused before the run
    assert not (d / "missing").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_verify_refuses_a_read_only_counterexample_folder(capsys, vnn):
    d, net = vnn
    ro = d / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, err = run(capsys, ["verify", str(net), str(d / "p.vnnlib"), "--timeout", "30",
                                 "--counterexample", str(ro / "cex.txt")])
    finally:
        ro.chmod(0o700)
    assert code == 2 and "is not writable" in err


@pytest.mark.parametrize("prop, timeout, message", [
    ("p", "nan", "timeout must be a finite number of seconds > 0, got nan"),
    ("empty", "30", "the input box is empty: X_0 has lower bound 1 > upper bound -1"),
])
def test_verify_bad_timeout_and_empty_box_exit_2(capsys, vnn, prop, timeout, message):
    d, net = vnn
    code, err = run(capsys, ["verify", str(net), str(d / f"{prop}.vnnlib"), "--timeout", timeout,
                             "--counterexample", str(d / "cex.txt")])
    assert code == 2 and message in err
    assert not (d / "cex.txt").exists()


def test_json_stdout_is_pure_json_with_the_milp(work):
    """``bound --json`` with the exact (MILP, HiGHS through cvxpy) Lipschitz method in a fresh
    process, where HiGHS would print its banner: stdout parses as JSON."""
    data, out = work
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    argv = ["bound", "--model", FLAT, "--inputs", str(data / "x2.npy"), "--index", "0",
            "--lipschitz-method", "exact", "--json"]
    run_ = subprocess.run([sys.executable, "-m", "lipbound.cli", *argv], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert run_.returncode == 0, run_.stderr
    records = json.loads(run_.stdout)["records"]
    assert [r["kind"] for r in records] == ["output_bounds", "lipschitz"]
