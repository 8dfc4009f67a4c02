"""The HTML report rendered by a real browser (headless Chromium, Debian's ``chromium``, which
``.ci/run`` installs): its tables and plots are in the rendered DOM, every embedded PNG
decodes, and a screenshot of the page is not blank."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

import lipbound
from lipbound import audit
from lipbound.models.diabetes import FEATURES, diabetes_box
from lipbound.models.digits import digits_data
from lipbound.report import lipschitz_record, output_bounds_record, weights_record, write_html
from lipbound.report.audit_records import monotonicity_records, robustness_records

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not on PATH here (.ci/run installs it: "
                             "apt-get install chromium)")

# on load, record what the browser made of each image: (complete, naturalWidth, naturalHeight)
PROBE = ("<script>window.addEventListener('load', () => document.body.setAttribute("
         "'data-images', JSON.stringify([...document.images].map("
         "i => [i.complete, i.naturalWidth, i.naturalHeight]))));</script>")
SECTIONS = ("Output bounds", "Local Lipschitz constants", "Certified accuracy",
            "Monotonicity", "Weight audit")


class _Dom(HTMLParser):
    """Tables (with their row counts), images, section titles and the body's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[int] = []
        self.images: list[str] = []
        self.h2: list[str] = []
        self.body: dict[str, str] = {}
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append(0)
        elif tag == "tr" and self.tables:
            self.tables[-1] += 1
        elif tag == "img":
            self.images.append(a.get("src") or "")
        elif tag == "h2":
            self._in_h2 = True
            self.h2.append("")
        elif tag == "body":
            self.body = {k: v or "" for k, v in a.items()}

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.h2[-1] += data


def _records() -> list[dict]:
    """Records of every section kind, from shipped models (a few seconds)."""
    model = lipbound.models.load("digits-mlp")
    X, y = digits_data()[2:]
    X, y = X[:3], y[:3]
    recs = []
    for i in range(3):
        recs.append(output_bounds_record(model, X[i], 0.01, lipbound.output_bounds(
            model, X[i], 0.01, data_range=(0.0, 1.0)), input={"index": i}))
        res = lipbound.local_lipschitz(model, X[i], 0.01, data_range=(0.0, 1.0))
        recs.append(lipschitz_record(model, X[i], res, input={"index": i}))
    recs.append(weights_record(model, audit.weights(model), model_name="digits-mlp"))
    rob = audit.robustness(model, X, y, eps_max=0.05, data_range=(0.0, 1.0),
                           methods=("lipschitz",), bisection_steps=4, progress=False)
    recs += robustness_records(model, rob, X, norm="inf", data_range=(0.0, 1.0),
                               model_name="digits-mlp")
    tab = lipbound.models.load("diabetes-mlp")
    lo, hi = diabetes_box()
    mono = audit.monotonicity(tab, lo, hi, features=[0, 2, 3], timeout=10, progress=False)
    recs += monotonicity_records(tab, mono, lo, hi, feature_names=FEATURES,
                                 model_name="diabetes-mlp")
    return recs


def _chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run",
         f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=10000", *args,
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180, check=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("chromium")
    report = write_html(_records(), tmp / "report.html", title="chromium check")
    probed = tmp / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    return probed, tmp


def test_rendered_dom_has_the_tables_and_decoded_plots(page):
    probed, tmp = page
    dom = _Dom()
    dom.feed(_chromium(probed, tmp, "--dump-dom").stdout)
    for title in SECTIONS:
        assert any(h.startswith(title) for h in dom.h2), (title, dom.h2)
    assert len(dom.tables) >= len(SECTIONS) and all(n >= 2 for n in dom.tables)  # head + rows
    # plots: certified accuracy, Lipschitz upper vs lower, monotonicity bars at least
    assert len(dom.images) >= 3
    assert all(src.startswith("data:image/png;base64,") for src in dom.images)
    decoded = json.loads(dom.body["data-images"])  # written by the browser's load handler
    assert len(decoded) == len(dom.images)
    for complete, width, height in decoded:
        assert complete and width >= 100 and height >= 100


def test_screenshot_is_not_blank(page):
    from matplotlib.image import imread

    probed, tmp = page
    shot = tmp / "shot.png"
    _chromium(probed, tmp, f"--screenshot={shot}", "--window-size=1200,2400",
              "--hide-scrollbars")
    img = imread(shot)[..., :3]  # floats in [0, 1]
    assert img.shape[0] >= 2000 and img.shape[1] >= 1100
    ink = (img < 0.9).any(axis=2).mean()  # text, table borders, plot lines
    colour = (img.max(axis=2) - img.min(axis=2) > 0.25).mean()  # plot colours, headings
    assert ink > 0.01 and colour > 0.001
