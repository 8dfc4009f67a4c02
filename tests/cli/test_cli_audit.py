"""``lipbound audit monotonicity`` / ``robustness`` on shipped models: records validate, verdicts
agree with autograd, certified radii never exceed attacked ones."""

from __future__ import annotations

import json

import pytest
import torch

import lipbound
import lipbound.audit
from lipbound.cli import main
from lipbound.report import read_records, validate

VERDICTS = {"increasing", "decreasing", "not monotone", "unknown"}


def test_audit_monotonicity_on_the_tabular_model(capsys, tmp_path):
    out = tmp_path / "mono.jsonl"
    assert main(["audit", "monotonicity", "--model", "diabetes-mlp", "--features", "0,2",
                 "--timeout", "5", "--max-domains", "200", "--output", str(out),
                 "--json"]) == 0
    records = json.loads(capsys.readouterr().out)["records"]
    assert records == read_records(out)
    model = lipbound.models.load("diabetes-mlp").double()
    assert [r["spec"]["feature"] for r in records] == [0, 2]
    # by construction (lipbound/models/diabetes.py): V-shaped in age, increasing in bmi
    assert [r["status"] for r in records] == ["not monotone", "increasing"]
    for r in records:
        validate(r)
        assert r["status"] in VERDICTS and r["spec"]["feature_name"] in ("age", "bmi")
        j = r["spec"]["feature"]
        lo, up = float(r["lower"]), float(r["upper"])
        assert lo <= up
        tol = r["settings"]["tol"]  # the verdicts allow the bounds' outward rounding
        if r["status"] == "increasing":
            assert lo >= -tol
        if r["status"] == "decreasing":
            assert up <= tol
        w = r["details"]["witness"]
        if r["status"] == "not monotone":
            x = torch.tensor(w, dtype=torch.float64, requires_grad=True)
            box_lo = torch.tensor(r["domain"]["lower"], dtype=torch.float64)
            box_up = torch.tensor(r["domain"]["upper"], dtype=torch.float64)
            assert bool(((box_lo <= x) & (x <= box_up)).all())
            g = torch.autograd.grad(model(x.unsqueeze(0))[0, 0], x)[0][j]
            assert lo <= float(g) <= up  # the certified range holds at the witness
            wd = float(r["details"]["witness_derivative"])
            assert abs(wd - float(g)) <= 1e-4 * (1 + abs(float(g)))


@pytest.mark.skipif(not hasattr(lipbound.audit, "robustness"),
                    reason="lipbound.audit.robustness has not landed yet (parallel work)")
def test_audit_robustness_curves_and_records(capsys, tmp_path):
    out = tmp_path / "rob.json"
    assert main(["audit", "robustness", "--index", "0:3", "--eps-max", "0.05",
                 "--radii", "0", "0.01", "0.02", "--output", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["radii"] == [0.0, 0.01, 0.02]
    for method, acc in doc["certified_accuracy"].items():
        assert len(acc) == 3 and all(a >= b for a, b in zip(acc, acc[1:])), method
    records = read_records(out)
    assert {r["method"] for r in records} >= {"bounds", "lipschitz"}
    for r in records:
        validate(r)
        assert r["kind"] == "certified_radius" and float(r["lower"]) >= 0
        if r["upper"] is not None:  # an attack succeeded at that radius
            assert float(r["lower"]) <= float(r["upper"])
    page = tmp_path / "rob.html"
    assert main(["report", str(out), "-o", str(page)]) == 0
    assert "Certified accuracy" in page.read_text()
