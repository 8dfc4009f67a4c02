"""JSON Lines reports streamed per input: one JSON object per line, flushed as it is written.

Long runs write each input's record the moment its job finishes, so an interrupted run leaves
every finished input's record on disk (in completion order; sort by ``index`` to read them in
input order). Each record is one ``write`` of a complete line followed by a flush (and an
``os.fsync`` with ``fsync=True``), so a crash can at worst leave a truncated last line, which
:func:`read_jsonl` skips.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Mapping
from typing import Any

from lipbound.errors import InputError
from lipbound.jsonutil import jsonable


class JsonlWriter:
    """Writes records (mappings, or objects with ``to_dict()``) to a path or an open text file.

    ``append=True`` adds to an existing file instead of replacing it. As a context manager on a
    path it created: if the block raises before any record was written, the empty file is
    removed (nothing half-written is left behind).
    """

    def __init__(self, target: str | os.PathLike | io.TextIOBase, *, append: bool = False,
                 fsync: bool = False) -> None:
        if isinstance(target, (str, os.PathLike)):
            try:
                self._fh = open(target, "a" if append else "w", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise InputError(f"cannot write the JSON Lines report {str(target)!r}: "
                                 f"{exc.strerror or exc}") from exc
            self._own, self._created = True, not append
            self.path: str | None = os.fspath(target)
        else:
            self._fh, self._own, self._created, self.path = target, False, False, None
        self._fsync = fsync
        self.count = 0

    def write(self, record: Any) -> None:
        """Write one record as one line and flush it to the file."""
        if hasattr(record, "to_dict"):
            record = record.to_dict()
        if not isinstance(record, Mapping):
            raise InputError(f"a JSON Lines record must be a mapping, got {type(record).__name__}")
        line = json.dumps(jsonable(dict(record)), allow_nan=False, separators=(",", ":"))
        self._fh.write(line + "\n")
        self._fh.flush()
        if self._fsync and hasattr(self._fh, "fileno"):
            os.fsync(self._fh.fileno())
        self.count += 1

    def close(self) -> None:
        if self._own and not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close()
        if exc_type is not None and self._created and self.count == 0 and self.path:
            with contextlib.suppress(OSError):
                os.remove(self.path)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSON Lines file; a truncated last line (no newline, not valid JSON,
    left by an interrupted run) is skipped, any other bad line raises InputError."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    out = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if k == len(lines) - 1:  # last piece had no newline: an interrupted write
                break
            raise InputError(f"{str(path)!r} line {k + 1} is not valid JSON: {exc}") from exc
    return out
