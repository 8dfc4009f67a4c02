"""VNN-COMP verdict files: the results CSV and counterexample / result files.

Results CSV (one row per instance, with a header line)::

    onnx,vnnlib,timeout,result,time,prepare_time

``result`` is one of ``unsat``, ``sat``, ``timeout``, ``unknown`` (or ``error`` for a row that
could not be run, e.g. a missing file); ``time`` is the verification time in seconds and
``prepare_time`` the time spent loading the network before it. :func:`read_results` also reads
files without the header, and with only the first five columns.

Counterexample / result file (the VNN-COMP 2022+ format)::

    sat
    ((X_0 0.25)
     (X_1 -0.5)
     (Y_0 1.75))

Values are written with Python's ``repr``, which reproduces every float64 (and so every float32
the executor used) exactly. For other verdicts the file holds the verdict word alone.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from lipbound.errors import InputError
from lipbound.report.output import write_atomic

__all__ = [
    "RESULT_COLUMNS",
    "ResultRow",
    "append_result",
    "format_counterexample",
    "read_counterexample",
    "read_result_file",
    "read_results",
    "write_result_file",
    "write_results",
]

RESULT_COLUMNS = ("onnx", "vnnlib", "timeout", "result", "time", "prepare_time")
_RESULTS = ("unsat", "sat", "timeout", "unknown", "error")


@dataclass(frozen=True)
class ResultRow:
    """One line of the results CSV."""

    onnx: str
    vnnlib: str
    timeout: float
    result: str
    time: float
    prepare_time: float = 0.0

    def __post_init__(self) -> None:
        if self.result not in _RESULTS:
            raise InputError(f"result {self.result!r} is not one of {_RESULTS}")

    def fields(self) -> list[str]:
        return [self.onnx, self.vnnlib, _num(self.timeout), self.result, _num(self.time),
                _num(self.prepare_time)]


def _num(v: float) -> str:
    return repr(float(v)) if math.isfinite(v) else str(v)


def write_results(path: str | Path, rows: Iterable[ResultRow]) -> None:
    """Write the results CSV (header + rows), replacing any existing file."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RESULT_COLUMNS)
    for row in rows:
        w.writerow(row.fields())
    Path(path).write_text(buf.getvalue())


def append_result(path: str | Path, row: ResultRow) -> None:
    """Append one row, writing the header first if the file does not exist or is empty."""
    path = Path(path)
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        if new:
            w.writerow(RESULT_COLUMNS)
        w.writerow(row.fields())


def read_results(path: str | Path) -> list[ResultRow]:
    """Read a results CSV; InputError naming the line for a malformed row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"results file not found: {str(path)!r}")
    out = []
    for lineno, row in enumerate(csv.reader(io.StringIO(path.read_text())), start=1):
        if not row or all(not f.strip() for f in row):
            continue
        if lineno == 1 and tuple(f.strip() for f in row[:5]) == RESULT_COLUMNS[:5]:
            continue
        if len(row) not in (5, 6):
            raise InputError(f"{path}, line {lineno}: expected {len(RESULT_COLUMNS)} fields, "
                             f"got {len(row)}")
        try:
            nums = [float(row[2]), float(row[4])] + ([float(row[5])] if len(row) == 6 else [])
        except ValueError:
            raise InputError(f"{path}, line {lineno}: timeout/time are not numbers") from None
        out.append(ResultRow(row[0].strip(), row[1].strip(), nums[0], row[3].strip(), *nums[1:]))
    return out


def format_counterexample(x: torch.Tensor, y: torch.Tensor) -> str:
    """The VNN-COMP counterexample text for flat input ``x`` and output ``y`` (ends in newline)."""
    xs = torch.as_tensor(x).reshape(-1).tolist()
    ys = torch.as_tensor(y).reshape(-1).tolist()
    items = [f"(X_{i} {float(v)!r})" for i, v in enumerate(xs)]
    items += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(ys)]
    return "sat\n(" + "\n ".join(items) + ")\n"


def write_result_file(path: str | Path, verdict: str,
                      counterexample: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Write a VNN-COMP result file: the verdict, with the counterexample when it is "sat"."""
    if verdict == "sat":
        if counterexample is None:
            raise InputError("a 'sat' result file needs the counterexample")
        text = format_counterexample(*counterexample)
    else:
        text = verdict + "\n"
    write_atomic(path, text)  # InputError for a missing or read-only folder


_ASSIGN = re.compile(r"\(\s*([XY])_(\d+)\s+([^\s()]+)\s*\)")


def read_result_file(path: str | Path) -> tuple[str, tuple[torch.Tensor, torch.Tensor] | None]:
    """``(verdict, (x, y) or None)`` from a result file written by :func:`write_result_file`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"result file not found: {str(path)!r}")
    text = path.read_text()
    words = text.split(None, 1)
    if not words:
        raise InputError(f"{path}: empty result file")
    verdict = words[0].strip()
    if verdict not in _RESULTS and verdict not in ("holds", "violated"):
        raise InputError(f"{path}: unknown verdict {verdict!r}")
    if verdict not in ("sat", "violated"):
        return verdict, None
    return verdict, _parse_assignments(path, words[1] if len(words) > 1 else "")


def read_counterexample(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(x, y)`` float64 tensors of a "sat" result file."""
    verdict, cex = read_result_file(path)
    if cex is None:
        raise InputError(f"{path}: verdict {verdict!r} has no counterexample")
    return cex


def _parse_assignments(path: Path, body: str) -> tuple[torch.Tensor, torch.Tensor]:
    values: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for m in _ASSIGN.finditer(body):
        try:
            values[m.group(1)][int(m.group(2))] = float(m.group(3))
        except ValueError:
            raise InputError(f"{path}: {m.group(3)!r} is not a number") from None
    out = []
    for kind in ("X", "Y"):
        got = values[kind]
        if not got or set(got) != set(range(len(got))):
            raise InputError(f"{path}: the counterexample's {kind}_i are missing or not "
                             f"numbered from 0")
        out.append(torch.tensor([got[i] for i in range(len(got))], dtype=torch.float64))
    return out[0], out[1]
