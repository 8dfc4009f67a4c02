"""HTML and Markdown reports from real records: self-contained, with their tables and plots."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import pytest
import torch

import lipbound
from lipbound.report import (
    lipschitz_record,
    output_bounds_record,
    smoothing_record,
    write_html,
    write_markdown,
)
from lipbound.report.sections import accuracy_curves
from tests.models import mlp

PNG = b"\x89PNG\r\n\x1a\n"


class _Refs(HTMLParser):
    """Collects every URL-bearing attribute and the tags of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "srcset", "data", "action", "poster"):
                self.refs.append((tag, k, v or ""))


@pytest.fixture(scope="module")
def records():
    model = mlp((4, 8, 8, 3))
    recs = []
    smooth = lipbound.Smooth(model, num_classes=3, sigma=0.25)
    for i in range(3):
        x = torch.linspace(-0.5, 0.5, 4) * (i + 1)
        recs.append(output_bounds_record(model, x, 0.05, lipbound.output_bounds(model, x, 0.05),
                                         input={"index": i}))
        res = lipbound.local_lipschitz(model, x, 0.05)
        recs.append(lipschitz_record(model, x, res, input={"index": i}))
        label = int(model(x.unsqueeze(0)).argmax())
        cert = smooth.certify(x, n0=20, n=200, alpha=0.01, batch_size=200, seed=i)
        recs.append(smoothing_record(model, x, cert, sigma=0.25, label=label, index=i))
    return recs


def test_html_is_self_contained_with_tables_and_plots(records, tmp_path):
    path = write_html(records, tmp_path / "r.html", title="t")
    page = path.read_text()
    parser = _Refs()
    parser.feed(page)
    assert parser.refs, "the page should embed its plots"
    for tag, attr, url in parser.refs:  # no external resource of any kind
        assert url.startswith("data:image/png;base64,"), (tag, attr, url[:60])
    assert "link" not in parser.tags and "script" not in parser.tags
    assert not re.search(r"url\(|@import", page)
    assert parser.tags.count("table") >= 3 and parser.tags.count("img") >= 2
    for _, _, url in parser.refs:
        assert base64.b64decode(url.split(",", 1)[1])[:8] == PNG
    for title in ("Output bounds", "Local Lipschitz constants", "Certified accuracy"):
        assert title in page


def test_markdown_writes_pngs_beside_it(records, tmp_path):
    path = write_markdown(records, tmp_path / "r.md")
    text = path.read_text()
    names = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert names and all("/" not in n for n in names)
    assert all((tmp_path / n).read_bytes()[:8] == PNG for n in names)
    assert "| input | method |" in text


def test_certified_accuracy_curve_counts_correct_certified_inputs(records):
    smooth = [r for r in records if r["kind"] == "smoothing"]
    (grid, acc), = accuracy_curves(smooth).values()
    for g, a in zip(grid, acc):
        want = sum(bool(r["input"]["correct"]) and r["status"] != "abstain"
                   and r["lower"] >= g for r in smooth) / len(smooth)
        assert a == want
    assert all(a >= b for a, b in zip(acc, acc[1:]))  # non-increasing in the radius


def test_anytime_trace_and_weights_sections(records, tmp_path):
    from lipbound.report.records import header

    rec = dict(records[1], trace=[[0.0, 5.0, 1.0], [0.5, 3.0, 2.0], [1.0, 2.5, 2.4]])
    weights = header("weights", mlp((4, 8, 8, 3)), status="done", time=0.0, model_name="m")
    weights["layers"] = [{"name": "1", "kind": "Linear", "shape": [8, 4], "spectral_norm": 2.0,
                          "condition_number": "inf", "sparsity": 0.0}]
    page = write_html([rec, weights], tmp_path / "r.html").read_text()
    assert 'id="bound_vs_time"' in page and "Weight audit" in page
    assert "naive global l2 bound" in page and "min certified local" in page
