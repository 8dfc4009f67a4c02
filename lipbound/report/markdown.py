"""A Markdown report with its plots as PNG files beside it (``<stem>-<plot>.png``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lipbound.report import sections
from lipbound.report.output import check_writable, write_atomic
from lipbound.report.schema import validate


def _cell(c: str) -> str:
    return c.replace("|", "\\|").replace("\n", " ")


def _table(t: sections.Table) -> str:
    lines = ["| " + " | ".join(map(_cell, t.headers)) + " |",
             "|" + "---|" * len(t.headers)]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in t.rows]
    return "\n".join(lines)


def render(records: Sequence[dict], stem: str, title: str = "lipbound report"
           ) -> tuple[str, dict[str, bytes]]:
    """(Markdown text, {png file name: bytes}); images are referenced by relative name."""
    for r in records:
        validate(r)
    parts, files = [f"# {title}"], {}
    for s in sections.build(records):
        parts.append(f"## {s.title}")
        if s.text:
            parts.append(s.text)
        parts.extend(_table(t) for t in s.tables)
        for p in s.plots:
            name = f"{stem}-{p.name}.png"
            files[name] = p.png
            parts.append(f"![{p.caption}]({name})")
    return "\n\n".join(parts) + "\n", files


def write_markdown(records: Sequence[dict], path: str | os.PathLike,
                   title: str = "lipbound report") -> Path:
    """Write the Markdown report and its PNG files; on failure nothing is left behind."""
    path = check_writable(path)
    text, files = render(records, path.stem, title)
    written: list[Path] = []
    try:
        for name, data in files.items():
            written.append(write_atomic(path.parent / name, data))
        write_atomic(path, text)
    except BaseException:
        for f in written:
            f.unlink(missing_ok=True)
        raise
    return path
