"""The bound-report schema: every producer's records validate; malformed records do not."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

import lipbound
from lipbound.report import (
    SCHEMA_VERSION,
    JsonlWriter,
    SchemaError,
    lipschitz_record,
    output_bounds_record,
    read_records,
    smoothing_record,
    validate,
)
from lipbound.report.provenance import model_hash, tensor_hash
from tests.models import mlp


@pytest.fixture(scope="module")
def setup():
    model = mlp((4, 8, 8, 3))
    x = torch.tensor([0.3, -0.2, 0.5, 0.1])
    return model, x


def test_output_bounds_record_validates_and_keeps_bounds(setup):
    model, x = setup
    lo, up = lipbound.output_bounds(model, x, 0.1, norm=2)
    rec = output_bounds_record(model, x, 0.1, (lo, up), norm=2, input={"index": 0})
    assert validate(rec) is rec
    assert rec["schema_version"] == SCHEMA_VERSION
    assert rec["lower"] == lo.tolist() and rec["upper"] == up.tolist()
    assert rec["gap"] == pytest.approx(float((up - lo).max()))
    assert rec["domain"]["norm"] == 2 and rec["domain"]["center"] == pytest.approx(x.tolist())
    assert rec["model"]["hash"] == model_hash(model)
    validate(json.loads(json.dumps(rec)))  # survives a JSON round trip


def test_lipschitz_record_validates(setup):
    model, x = setup
    res = lipbound.local_lipschitz(model, x, 0.05, data_range=(-1.0, 1.0))
    rec = lipschitz_record(model, x, res, data_range=(-1.0, 1.0), seed=0)
    validate(rec)
    assert rec["domain"]["norm"] == "inf" and rec["domain"]["data_range"] == [-1.0, 1.0]
    assert all(lo <= up for lo, up in zip(rec["lower"], rec["upper"]))
    assert rec["details"]["value"] == res.value


def test_smoothing_record_validates(setup):
    model, x = setup
    cert = lipbound.Smooth(model, num_classes=3, sigma=0.25).certify(
        x, n0=20, n=200, alpha=0.01, batch_size=100, seed=0)
    rec = smoothing_record(model, x, cert, sigma=0.25, settings={"n0": 20, "n": 200},
                           seed=0, label=0, index=7)
    validate(rec)
    assert rec["lower"] == cert.radius and rec["upper"] is None and rec["gap"] is None
    assert rec["input"]["index"] == 7


def test_infinite_values_are_encoded_as_strings(setup):
    model, x = setup
    lo = torch.tensor([-math.inf, 0.0, 1.0])
    up = torch.tensor([math.inf, 1.0, 2.0])
    rec = output_bounds_record(model, x, 0.1, (lo, up))
    text = json.dumps(rec, allow_nan=False)  # strict JSON
    back = validate(json.loads(text))
    assert back["lower"][0] == "-inf" and back["upper"][0] == "inf" and back["gap"] == "inf"


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("model"), "missing required key 'model'"),
    (lambda r: r.update(schema_version="lipbound.report/0"), "schema_version"),
    (lambda r: r.update(kind="nonsense"), "unknown kind"),
    (lambda r: r.update(upper="big"), "'upper'"),
    (lambda r: r.update(time=True), "'time'"),
    (lambda r: r["domain"].pop("eps"), "'eps'"),
    (lambda r: r["environment"].pop("torch"), "torch"),
    (lambda r: r.update(trace=[[0.0, 1.0]]), "'trace'"),
])
def test_malformed_records_are_rejected(setup, mutate, message):
    model, x = setup
    rec = output_bounds_record(model, x, 0.1, lipbound.output_bounds(model, x, 0.1))
    bad = copy.deepcopy(rec)
    mutate(bad)
    with pytest.raises(SchemaError, match=message):
        validate(bad)
    assert isinstance(SchemaError("x"), lipbound.LipboundError)


def test_model_hash_depends_only_on_state(setup):
    model, _ = setup
    twin = mlp((4, 8, 8, 3))
    assert model_hash(twin) == model_hash(model)
    with torch.no_grad():
        twin[1].bias[0] += 1e-6
    assert model_hash(twin) != model_hash(model)
    assert tensor_hash(torch.zeros(2, 3)) != tensor_hash(torch.zeros(3, 2))


def test_jsonl_streams_and_reads_back(setup, tmp_path):
    model, x = setup
    rec = output_bounds_record(model, x, 0.1, lipbound.output_bounds(model, x, 0.1))
    path = tmp_path / "run.jsonl"
    with JsonlWriter(path) as w:
        w.write(rec)
        assert len(path.read_text().splitlines()) == 1  # flushed before the run ends
        w.write(rec)
    back = read_records(path)
    assert len(back) == 2 and all(validate(r) for r in back)
    (tmp_path / "one.json").write_text(json.dumps({"records": back}))
    assert len(read_records(tmp_path / "one.json")) == 2


def test_read_records_errors(tmp_path):
    with pytest.raises(lipbound.InputError, match="does not exist"):
        read_records(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(lipbound.InputError, match="not valid JSON"):
        read_records(tmp_path / "bad.json")


def test_branch_and_bound_record_keeps_its_anytime_trace(setup):
    model, x = setup
    res = lipbound.local_lipschitz(model, x, 0.2, method="bab", timeout=1.0, progress=False)
    rec = validate(lipschitz_record(model, x, res))
    assert rec["method"] == "bab" and rec["trace"]
    for t, up, lo in rec["trace"]:
        assert t >= 0 and lo <= up
    assert rec["trace"][-1][1] >= res.value - 1e-9 * abs(res.value)  # before final widening


def test_monotonicity_records_validate(setup):
    from lipbound.audit import monotonicity
    from lipbound.report.audit_records import monotonicity_records

    model, _ = setup
    lo, up = -torch.ones(4), torch.ones(4)
    rep = monotonicity(model, lo, up, features=[0, 3], timeout=2.0, max_domains=50,
                       progress=False)
    recs = monotonicity_records(model, rep, lo, up, feature_names=["a", "b", "c", "d"])
    assert [r["spec"]["feature_name"] for r in recs] == ["a", "d"]
    for r, fv in zip(recs, rep.features):
        validate(json.loads(json.dumps(r)))
        assert r["status"] == fv.verdict and r["lower"] == fv.derivative_lower
        assert r["domain"]["lower"] == lo.tolist() and r["domain"]["norm"] == "box"
