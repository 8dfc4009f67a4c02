"""``lipbound certify``: TSV and JSON outputs, per-input seeds, data sources, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lipbound.models as zoo
from lipbound.cli import main
from lipbound.models.digits_smooth import digits_images
from lipbound.report import provenance, read_records, validate
from lipbound.report.provenance import tensor_hash
from lipbound.smoothing import DualPair, Smooth
from lipbound.smoothing.dataset import certify_dataset, input_seed
from lipbound.smoothing.records import TSV_COLUMNS, read_tsv

SMALL = ["--n0", "20", "--n", "300", "--alpha", "0.01", "--threads", "1", "--no-progress"]


ROW_KEYS = ("idx", "label", "predict", "radius", "correct", "certificate", "details")


def _stable(rec: dict) -> dict:
    """The smoothing-format keys of a record, without its timings."""
    return {k: rec[k] for k in ROW_KEYS}


def _run(capsys, *args) -> tuple[int, str, str]:
    rc = main(["certify", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_tsv_json_and_per_input_seeds(tmp_path, capsys):
    tsv, js = tmp_path / "c.tsv", tmp_path / "c.json"
    rc, out, _ = _run(capsys, "--model", "digits-smooth-0.25", "--data", "digits",
                      "--indices", "0:4", "--tsv", str(tsv), "--json", str(js), "--seed", "5",
                      *SMALL)
    assert rc == 0 and "certified accuracy" in out
    assert tsv.read_text().splitlines()[0].split("\t") == list(TSV_COLUMNS)
    rows = read_tsv(tsv)
    doc = json.loads(js.read_text())
    recs = doc["records"]
    assert doc["format"] == "lipbound.smoothing/1" and doc["meta"]["sigma"] == 0.25
    assert [r["idx"] for r in rows] == [r["idx"] for r in recs] == [0, 1, 2, 3]
    for row, rec in zip(rows, recs):
        assert row["predict"] == rec["predict"] and row["label"] == rec["label"]
        assert row["radius"] <= rec["radius"]
        assert row["radius"] == pytest.approx(rec["radius"], rel=1e-5)
        assert rec["details"]["seed"] == input_seed(5, rec["idx"])
    # the library loop gives the same records
    torch.set_num_threads(1)
    _, _, xte, yte = digits_images()
    smooth = Smooth(zoo.load("digits-smooth-0.25"), 10, 0.25, input_shape=(1, 8, 8))
    lib = certify_dataset(smooth, xte[:4], yte[:4], n0=20, n=300, alpha=0.01, seed=5)
    assert [_stable(r) for r in lib] == [_stable(r) for r in recs]
    # a sub-range reproduces the same records (seeds depend on the row, not the position)
    js2 = tmp_path / "c2.json"
    rc, _, _ = _run(capsys, "--model", "digits-smooth-0.25", "--indices", "2:4", "--json",
                    str(js2), "--seed", "5", *SMALL)
    assert rc == 0
    sub = json.loads(js2.read_text())["records"]
    assert [_stable(r) for r in sub] == [_stable(r) for r in recs[2:]]


def test_json_records_validate_against_the_report_schema(tmp_path, capsys):
    js = tmp_path / "c.json"
    rc, _, _ = _run(capsys, "--model", "digits-smooth-0.25", "--indices", "3,7", "--json",
                    str(js), "--seed", "2", *SMALL)
    assert rc == 0
    recs = read_records(js)
    _, _, xte, yte = digits_images()
    model_hash = provenance.model_hash(zoo.load("digits-smooth-0.25"))
    for rec, i in zip(recs, (3, 7)):
        validate(rec)
        assert rec["kind"] == "smoothing" and rec["model"]["hash"] == model_hash
        assert rec["lower"] == rec["radius"] and rec["upper"] is None
        assert rec["domain"]["center_hash"] == tensor_hash(xte[i])
        assert rec["input"] == {"index": i, "label": int(yte[i]), "correct": rec["correct"]}
        assert rec["seed"] == input_seed(2, i) and rec["settings"]["sigma"] == 0.25
        assert rec["status"] == ("abstain" if rec["predict"] < 0 else "certified")
    page = tmp_path / "c.html"
    assert main(["report", str(js), "-o", str(page)]) == 0  # the report command reads it
    assert "Certified accuracy" in page.read_text()


def test_file_inputs_labels_and_dual(tmp_path, capsys):
    _, _, xte, yte = digits_images()
    xs, ys = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(xs, xte[:3].reshape(3, 64).numpy())  # flat rows: reshaped to the model's [1, 8, 8]
    np.save(ys, yte[:3].numpy())
    js = tmp_path / "d.json"
    rc, _, _ = _run(capsys, "--model", "digits-smooth-0.5", "--data", str(xs), "--labels",
                    str(ys), "--certificate", "dual", "--json", str(js), *SMALL)
    assert rc == 0
    recs = json.loads(js.read_text())["records"]
    assert [r["label"] for r in recs] == yte[:3].tolist()
    assert all("n_A_left" in r["details"] for r in recs)  # the shipped DRS pair was attached
    pt = tmp_path / "x.pt"
    torch.save({"x": xte[3:5], "y": yte[3:5]}, pt)
    tsv = tmp_path / "p.tsv"
    rc, _, _ = _run(capsys, "--model", "digits-smooth-0.5", "--data", str(pt), "--tsv",
                    str(tsv), "--certificate", "best", "--radius-fn", "global-lipschitz", *SMALL)
    assert rc == 0 and [r["label"] for r in read_tsv(tsv)] == yte[3:5].tolist()


def test_library_loop_matches_direct_certify_with_dual():
    """certify_dataset is a plain loop: record i is Smooth.certify with input_seed(seed, i)."""
    torch.set_num_threads(1)
    _, _, xte, yte = digits_images()
    pair = DualPair(zoo.load("digits-smooth-0.12-left"), zoo.load("digits-smooth-0.12-right"))
    smooth = Smooth(zoo.load("digits-smooth-0.12"), 10, 0.12, dual=pair)
    recs = certify_dataset(smooth, xte[5:7], yte[5:7], indices=[5, 6], n0=20, n=200,
                           certificate="dual", seed=1)
    for r, i in zip(recs, (5, 6)):
        c = smooth.certify(xte[i], n0=20, n=200, certificate="dual", seed=input_seed(1, i))
        assert (r["predict"], r["radius"]) == (c.prediction, c.radius)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "digits-smooth-0.25", "--n", "0"], "n must be an integer"),
        (["--model", "digits-smooth-0.25", "--alpha", "1.5"], "alpha"),
        (["--model", "digits-smooth-0.25", "--batch-size", "0"], "batch_size"),
        (["--model", "digits-mlp"], "--sigma"),
        (["--model", "digits-smooth-0.25", "--certificate", "lipschitz",
          "--lipschitz-constant", "abc"], "lipschitz-constant"),
        (["--model", "digits-smooth-0.25", "--indices", "500:510"], "index"),
        (["--model", "no-such-model"], "unknown model"),
    ],
)
def test_bad_input_exits_2(capsys, args, message):
    extra = [] if "--indices" in args else ["--indices", "0:1"]
    rc, _, err = _run(capsys, *args, *extra, "--no-progress", "--threads", "1")
    assert rc == 2 and message in err
