"""Output files of smoothing runs.

* Cohen et al.'s TSV (``idx label predict radius correct time``), which their ``analyze.py``
  reads with ``pandas.read_csv(path, delimiter="\\t")``. Radii are written rounded *down* to 6
  significant digits (their ``{:.3}`` can round a radius up); times as ``str(timedelta)``.
* lipbound's JSON document ``{"format": FORMAT, "meta": ..., "records": [...]}``: the run's
  settings and one record per input. The records are report-schema ``smoothing`` records
  (:func:`lipbound.report.records.smoothing_record`, what ``certify_one`` returns), so
  ``lipbound report`` reads the file; ``FORMAT`` names the document, not another record format.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
from collections.abc import Iterable
from decimal import ROUND_FLOOR, Decimal

from lipbound.jsonutil import jsonable

TSV_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
FORMAT = "lipbound.smoothing/1"


def floor_sig(x: float, digits: int = 6) -> str:
    """``x`` rounded down to ``digits`` significant digits, as text (never above ``x``:
    the decimal is at most x exactly, and the double nearest to it cannot pass the double x)."""
    if not math.isfinite(x) or x <= 0:
        return "0.0" if not x > 0 else str(x)
    d = Decimal(x)  # exact value of the double
    q = d.quantize(Decimal(1).scaleb(d.adjusted() - digits + 1), rounding=ROUND_FLOOR)
    return str(float(q))


def tsv_fields(idx: int, label: int | None, predict: int, radius: float, seconds: float) -> str:
    """One Cohen-format line (no newline); an unknown label is written as -1, never correct."""
    correct = int(label is not None and predict == label)
    return "\t".join(
        [
            str(idx),
            str(-1 if label is None else label),
            str(predict),
            floor_sig(radius),
            str(correct),
            str(datetime.timedelta(seconds=seconds)),
        ]
    )


def tsv_line(idx: int, label: int | None, cert, elapsed: float | None = None) -> str:
    t = cert.time if elapsed is None else elapsed
    return tsv_fields(idx, label, cert.prediction, cert.radius, t)


class TsvWriter:
    """Streams Cohen-format lines (header first) to a path or a text file; flushes each line."""

    def __init__(self, target: str | os.PathLike | io.TextIOBase) -> None:
        if isinstance(target, (str, os.PathLike)):
            self._fh = open(target, "w")  # noqa: SIM115 - closed in close()
            self._own = True
        else:
            self._fh, self._own = target, False
        print("\t".join(TSV_COLUMNS), file=self._fh, flush=True)

    def write(self, idx: int, label: int, cert, elapsed: float | None = None) -> None:
        print(tsv_line(idx, label, cert, elapsed), file=self._fh, flush=True)

    def write_record(self, rec: dict) -> None:
        """A line from a smoothing record (``certify_one`` / ``certify_dataset``)."""
        line = tsv_fields(rec["idx"], rec["label"], rec["predict"], rec["radius"], rec["time"])
        print(line, file=self._fh, flush=True)

    def close(self) -> None:
        if self._own:
            self._fh.close()

    def __enter__(self) -> TsvWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_tsv(path: str | os.PathLike) -> list[dict]:
    """Read a Cohen-format TSV back (numbers parsed, time kept as text)."""
    rows = []
    with open(path) as fh:
        header = fh.readline().rstrip("\n").split("\t")
        for line in fh:
            if not line.strip():
                continue
            vals = dict(zip(header, line.rstrip("\n").split("\t")))
            rows.append(
                {
                    "idx": int(vals["idx"]),
                    "label": int(vals["label"]),
                    "predict": int(vals["predict"]),
                    "radius": float(vals["radius"]),
                    "correct": int(vals["correct"]),
                    "time": vals["time"],
                }
            )
    return rows


def write_json(path: str | os.PathLike, records: Iterable[dict], meta: dict | None = None) -> None:
    """``{"format": ..., "meta": ..., "records": [...]}`` with stable key order."""
    doc = {
        "format": FORMAT,
        "meta": jsonable(meta or {}),
        "records": [jsonable(r) for r in records],
    }
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1, allow_nan=False)


def certified_accuracy(rows: Iterable[dict], radii: Iterable[float]) -> dict[float, float]:
    """Fraction of rows correct with radius >= r, for each r (Cohen's ``analyze.py`` measure)."""
    rows = list(rows)
    out = {}
    for r in radii:
        ok = sum(1 for row in rows if row["correct"] and row["radius"] >= r)
        out[float(r)] = ok / len(rows) if rows else float("nan")
    return out
