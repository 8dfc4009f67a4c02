"""JSON Lines streaming for long runs, and reading result files back.

:class:`JsonlWriter` writes one record per line and flushes after each, so a run that stops
early leaves every finished record readable. :func:`read_records` reads a ``.jsonl`` file or a
``.json`` file holding one record, a list of records, or an object with a ``"records"`` list.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from lipbound.errors import InputError
from lipbound.smoothing.records import jsonable


def dumps(record: Any) -> str:
    """Strict one-line JSON of ``record`` (non-finite floats become "inf"/"-inf"/null)."""
    return json.dumps(jsonable(record), allow_nan=False, separators=(",", ":"))


class JsonlWriter:
    """Streams records to a path (or an open text file), one JSON object per line.

    As a context manager: if the block raises before any record was written to a path it
    opened, the empty file is removed (nothing half-written is left behind).
    """

    def __init__(self, target: str | os.PathLike | IO[str]) -> None:
        if isinstance(target, (str, os.PathLike)):
            self.path: Path | None = Path(target)
            try:
                self._fh: IO[str] = open(self.path, "w")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise InputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        else:
            self.path, self._fh = None, target
        self.count = 0

    def write(self, record: Any) -> None:
        """Append one record and flush."""
        self._fh.write(dumps(record) + "\n")
        self._fh.flush()
        self.count += 1

    def write_all(self, records: Iterable[Any]) -> None:
        for r in records:
            self.write(r)

    def close(self) -> None:
        if self.path is not None and not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        self.close()
        if exc_type is not None and self.path is not None and self.count == 0:
            self.path.unlink(missing_ok=True)


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column "
                         f"{exc.colno})") from None


def _iter_jsonl(text: str, path: Path) -> Iterator[Any]:
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield _parse_json(line, f"{path}:{i}")


def read_records(path: str | os.PathLike) -> list[dict]:
    """All records of a ``.json`` or ``.jsonl`` result file (not validated here)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"result file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read result file {path}: {exc}") from None
    if path.suffix == ".jsonl":
        data: Any = list(_iter_jsonl(text, path))
    else:
        data = _parse_json(text, str(path))
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    records = data if isinstance(data, list) else [data]
    bad = [i for i, r in enumerate(records) if not isinstance(r, dict)]
    if bad:
        raise InputError(f"{path}: entry {bad[0]} is not a JSON object")
    return records
