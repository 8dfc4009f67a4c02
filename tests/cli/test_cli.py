"""The command line on the shipped models: demo (HTML report), bound, report."""

from __future__ import annotations

import json
import re

import torch

import lipbound
from lipbound.cli import main
from lipbound.models.digits import digits_data
from lipbound.report import read_records, validate


def test_demo_certifies_digits_and_writes_a_report(capsys, tmp_path):
    report = tmp_path / "demo.html"
    assert main(["demo", "--index", "0:2", "--json", "--report", str(report)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "digits-mlp" and len(out["inputs"]) == 2
    assert out["report"] == str(report.resolve())
    for rec in out["inputs"]:
        assert rec["lipschitz_lower"] <= rec["lipschitz_upper"]
        assert rec["certified"] == (rec["min_margin_lower"] > 0)
    page = report.read_text()
    assert "<table>" in page and 'src="data:image/png;base64,' in page
    assert "Local Lipschitz constants" in page and "Output bounds" in page


def test_bound_reports_sound_intervals(capsys):
    assert main(["bound", "--index", "3,5", "--eps", "0.01", "--json",
                 "--lipschitz-method", "none"]) == 0
    records = json.loads(capsys.readouterr().out)["records"]
    assert [r["input"]["index"] for r in records] == [3, 5]
    X = digits_data()[2]
    model = lipbound.models.load("digits-mlp")
    for r in records:
        validate(r)
        y = model(X[r["input"]["index"]].unsqueeze(0))[0]
        assert all(lo <= v <= up for lo, v, up in zip(r["lower"], y.tolist(), r["upper"]))
        assert r["domain"]["eps"] == 0.01 and r["domain"]["data_range"] == [0.0, 1.0]


def test_bound_float32_precision_contains_float64_bounds(capsys):
    """``--precision float32`` reaches the API: its bounds contain the float64 run's (float32
    coefficients carry a rounding allowance, so they are no tighter) and differ from them."""
    runs = {}
    for precision in ("float64", "float32"):
        assert main(["bound", "--index", "2", "--eps", "0.02", "--json", "--spec", "margin",
                     "--precision", precision]) == 0
        runs[precision] = json.loads(capsys.readouterr().out)["records"]
    (ob64, lip64), (ob32, lip32) = runs["float64"], runs["float32"]
    assert lip32["settings"]["precision"] == "float32"
    assert all(a <= b for a, b in zip(ob32["lower"], ob64["lower"]))
    assert all(a >= b for a, b in zip(ob32["upper"], ob64["upper"]))
    assert ob32["upper"] != ob64["upper"]
    assert all(a >= b for a, b in zip(lip32["upper"], lip64["upper"]))


def test_bound_margin_spec_and_lipschitz_records(capsys, tmp_path):
    out = tmp_path / "run.jsonl"
    assert main(["bound", "--index", "0", "--spec", "margin", "--output", str(out)]) == 0
    table = capsys.readouterr().out
    records = read_records(out)
    kinds = [r["kind"] for r in records]
    assert kinds == ["output_bounds", "lipschitz"]
    ob, lip = (validate(r) for r in records)
    assert ob["spec"]["type"] == "margin" and len(ob["lower"]) == 9
    assert all(lo <= up for lo, up in zip(lip["lower"], lip["upper"]))
    certified = min(ob["lower"]) > 0
    assert re.search(rf"\b{certified}\b", table)


def test_report_command_renders_html_and_markdown(capsys, tmp_path):
    run = tmp_path / "run.json"
    assert main(["bound", "--index", "0:2", "--output", str(run)]) == 0
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    assert main(["report", str(run), "-o", str(html), "--title", "my title"]) == 0
    assert main(["report", str(run), "-o", str(md)]) == 0
    assert "<title>my title</title>" in html.read_text()
    text = md.read_text()
    pngs = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", text)
    assert pngs and all((tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_bad_model_name_exits_2(capsys):
    assert main(["bound", "--model", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_digits_rows_are_reshaped_for_the_cnn(capsys):
    assert main(["bound", "--model", "digits-cnn", "--index", "1", "--json",
                 "--lipschitz-method", "none", "--method", "ibp"]) == 0
    rec = json.loads(capsys.readouterr().out)["records"][0]
    x = digits_data()[2][1].reshape(1, 8, 8)
    y = lipbound.models.load("digits-cnn")(x.unsqueeze(0))[0]
    assert torch.all(torch.tensor(rec["lower"]) <= y) and torch.all(y <= torch.tensor(rec["upper"]))
