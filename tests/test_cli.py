"""The command line on the shipped model."""

from __future__ import annotations

import json

import lipbound
from lipbound.cli import main


def test_demo_certifies_digits(capsys):
    assert main(["demo", "--n", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "digits-mlp" and len(out["inputs"]) == 2
    for rec in out["inputs"]:
        assert rec["lipschitz_lower"] <= rec["lipschitz_upper"]
        assert rec["certified"] == (rec["min_margin_lower"] > 0)


def test_bound_reports_sound_intervals(capsys):
    assert main(["bound", "--index", "3", "--eps", "0.01"]) == 0
    out = json.loads(capsys.readouterr().out)
    from lipbound.models.digits import digits_data

    x = digits_data()[2][3]
    y = lipbound.models.load("digits-mlp")(x.unsqueeze(0))[0]
    assert all(lo <= v <= up for lo, v, up in zip(out["lower"], y.tolist(), out["upper"]))


def test_bad_model_name_exits_2(capsys):
    assert main(["bound", "--model", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err
