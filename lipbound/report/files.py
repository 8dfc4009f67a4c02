"""Read result files back: ``.jsonl`` (one record per line) or ``.json`` (one record, a list of
records, or an object with a ``"records"`` list)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lipbound.errors import InputError
from lipbound.jsonutil import jsonable
from lipbound.report.jsonl import read_jsonl


def dumps(record: Any) -> str:
    """Strict one-line JSON of ``record`` (non-finite floats become "inf"/"-inf"/null)."""
    return json.dumps(jsonable(record), allow_nan=False, separators=(",", ":"))


def read_records(path: str | os.PathLike) -> list[dict]:
    """All records of a ``.json`` or ``.jsonl`` result file (not validated here)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"result file {path} does not exist")
    if path.suffix == ".jsonl":
        data: Any = read_jsonl(path)
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read result file {path}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, "
                             f"column {exc.colno})") from None
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    records = data if isinstance(data, list) else [data]
    bad = [i for i, r in enumerate(records) if not isinstance(r, dict)]
    if bad:
        raise InputError(f"{path}: entry {bad[0]} is not a JSON object")
    return records
