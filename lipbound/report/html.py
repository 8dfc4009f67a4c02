"""A self-contained HTML report: inline CSS, plots as base64 PNG, no external resources."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from pathlib import Path

from lipbound.report import sections
from lipbound.report.output import write_atomic
from lipbound.report.schema import validate

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { border-bottom: 2px solid #457b9d; padding-bottom: .2em; }
h2 { color: #1d3557; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f1f3f5; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figcaption { font-size: .85em; color: #555; }
img { max-width: 100%; }
"""


def _table(t: sections.Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in t.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plot(p: sections.Plot) -> str:
    data = base64.b64encode(p.png).decode("ascii")
    cap = html.escape(p.caption)
    return (f'<figure id="{html.escape(p.name)}"><img alt="{cap}" '
            f'src="data:image/png;base64,{data}"><figcaption>{cap}</figcaption></figure>')


def render(records: Sequence[dict], title: str = "lipbound report") -> str:
    """The report as one HTML string (records are validated first)."""
    for r in records:
        validate(r)
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
             f"<h1>{html.escape(title)}</h1>"]
    for s in sections.build(records):
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{html.escape(s.text)}</p>")
        parts.extend(_table(t) for t in s.tables)
        parts.extend(_plot(p) for p in s.plots)
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_html(records: Sequence[dict], path: str | os.PathLike,
               title: str = "lipbound report") -> Path:
    """Render and write the HTML report atomically; returns its path."""
    return write_atomic(path, render(records, title))
