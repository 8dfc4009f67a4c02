"""Config files: every key is an option; explicit flags win over the file, the file over
built-in defaults."""

from __future__ import annotations

import json

import pytest

from lipbound.cli import main

BASE = ["bound", "--lipschitz-method", "none", "--method", "ibp"]


def _run(capsys, argv) -> dict:
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)["records"][0]


@pytest.mark.parametrize("suffix, text", [
    (".toml", 'eps = 0.05\nindex = "4"\nnorm = "2"\njson = true\ndata-range = [0.0, 1.0]\n'),
    (".yaml", "eps: 0.05\nindex: '4'\nnorm: '2'\njson: true\ndata_range: [0.0, 1.0]\n"),
])
def test_config_values_apply_and_flags_win(capsys, tmp_path, suffix, text):
    cfg = tmp_path / f"c{suffix}"
    cfg.write_text(text)
    rec = _run(capsys, [*BASE, "--config", str(cfg)])  # --json comes from the file
    assert rec["domain"]["eps"] == 0.05 and rec["domain"]["norm"] == 2
    assert rec["input"]["index"] == 4
    rec = _run(capsys, [*BASE, "--eps", "0.02", "--config", str(cfg), "--index", "6"])
    assert rec["domain"]["eps"] == 0.02 and rec["input"]["index"] == 6  # flags win
    assert rec["domain"]["norm"] == 2  # not given as a flag: the file's value


def test_explicit_flag_equal_to_the_default_still_wins(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('norm = "2"\n')
    rec = _run(capsys, [*BASE, "--json", "--norm", "inf", "--config", str(cfg)])
    assert rec["domain"]["norm"] == "inf"


@pytest.mark.parametrize("text, message", [
    ("epsilon = 0.1\n", "unknown option(s) ['epsilon']"),
    ("eps = [0.1\n", "not valid TOML"),
    ("", None),
])
def test_bad_config_files_exit_2(capsys, tmp_path, text, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    rc = main([*BASE, "--config", str(cfg), "--json"])
    if message is None:  # an empty file changes nothing
        assert rc == 0
        return
    assert rc == 2 and message in capsys.readouterr().err


def test_missing_config_and_unknown_format_exit_2(capsys, tmp_path):
    assert main([*BASE, "--config", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "c.ini").write_text("eps=1")
    assert main([*BASE, "--config", str(tmp_path / "c.ini")]) == 2
    assert ".toml, .yaml or .yml" in capsys.readouterr().err
