"""``lipbound report``: turn JSON / JSON Lines result files into an HTML or Markdown report."""

from __future__ import annotations

import argparse
from pathlib import Path

from lipbound.cli.config import add_config_option
from lipbound.errors import InputError
from lipbound.report.files import read_records
from lipbound.report.html import write_html
from lipbound.report.markdown import write_markdown
from lipbound.report.output import check_writable
from lipbound.report.schema import SchemaError, validate


def load_all(files: list[str]) -> list[dict]:
    """Every record of every file, validated (the message names the file and record)."""
    records = []
    for f in files:
        for i, rec in enumerate(read_records(f)):
            try:
                records.append(validate(rec))
            except SchemaError as exc:
                raise SchemaError(f"{f}, record {i}: {exc}") from None
    if not records:
        raise InputError(f"no records in {', '.join(files)}")
    return records


def run_report(args: argparse.Namespace) -> int:
    out = check_writable(args.output)
    if out.suffix not in (".html", ".htm", ".md"):
        raise InputError(f"--output {out}: use a .html or .md file name")
    records = load_all(args.files)
    if out.suffix == ".md":
        write_markdown(records, out, args.title)
    else:
        write_html(records, out, args.title)
    print(f"wrote {Path(out).resolve()} ({len(records)} records)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", help="HTML / Markdown report from JSON or JSONL result files",
                       description="Validate the records of one or more result files "
                                   "(.json or .jsonl, as written by --output) and render them.")
    r.add_argument("files", nargs="+", metavar="FILE", help="result files (.json / .jsonl)")
    r.add_argument("--output", "-o", default="lipbound-report.html",
                   help="report file: .html (self-contained) or .md (PNG plots beside it); "
                        "default lipbound-report.html")
    r.add_argument("--title", default="lipbound report")
    add_config_option(r)
    r.set_defaults(func=run_report)
