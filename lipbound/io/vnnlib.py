"""VNN-LIB 1.0 properties (the VNN-COMP 2021 format) and VNN-COMP instance lists.

A VNN-LIB file declares real inputs ``X_0 .. X_{n-1}`` and outputs ``Y_0 .. Y_{K-1}`` of a network
``f`` and asserts linear constraints over them, combined with ``and`` / ``or``. The asserted
formula describes a **counterexample**: the property is *violated* ("sat") iff some input ``x``
and ``y = f(x)`` satisfy every assert; it *holds* ("unsat") iff no such ``x`` exists.

:func:`read_vnnlib` brings the formula into disjunctive normal form and groups it by input box:
a :class:`VnnlibProperty` is a tuple of :class:`InputRegion` s, each an axis-aligned box
``lower <= x <= upper`` (float64, over the flattened input, in the order ``X_0, X_1, ...``) with
a disjunction of :class:`Conjunction` s ``(C, d)``, ``C`` of shape ``[m, K]`` and ``d`` of shape
``[m]``. The unsafe set of a region is::

    { x in [lower, upper] : C f(x) <= d  (all m rows)  for at least one (C, d) }

and the property is violated iff the unsafe set of some region is non-empty
(:func:`is_counterexample` checks a concrete output). To prove it holds, show for every region
and every conjunction ``(C, d)`` one row ``j`` with ``min over the box of C_j f(x) > d_j``: that row
is violated everywhere in the box, so the conjunction never holds. :meth:`InputRegion.spec`
stacks all rows into one spec matrix (e.g. for ``lipbound.output_bounds(..., spec=C)``) and
:func:`is_refuted` turns certified lower bounds of those rows into the verdict. Strict ``<`` /
``>`` are read as ``<=`` / ``>=``: the unsafe set grows to its closure, so a refutation stays sound.

This module reads files (and VNN-COMP instance lists) and splits each disjunct into an input box
and output rows; the syntax is :mod:`lipbound.io._vnnlib_syntax`, the property model
:mod:`lipbound.io.vnnlib_property`.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lipbound.errors import InputError, ShapeError
from lipbound.io._vnnlib_syntax import MAX_DISJUNCTS as MAX_DISJUNCTS
from lipbound.io._vnnlib_syntax import Reader, count_variables, read_commands
from lipbound.io.vnnlib_property import (
    Conjunction,
    InputRegion,
    VnnlibProperty,
    center_radius_linf,
    is_counterexample,
    is_refuted,
    stack_conjunctions,
)

__all__ = [
    "Conjunction",
    "InputRegion",
    "Instance",
    "VnnlibProperty",
    "center_radius_linf",
    "is_counterexample",
    "is_refuted",
    "parse_vnnlib",
    "read_instances",
    "read_vnnlib",
    "stack_conjunctions",
]


@dataclass(frozen=True)
class Instance:
    """One row of a VNN-COMP instances CSV: network, property and time limit (seconds)."""

    onnx: Path
    vnnlib: Path
    timeout: float


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InputError(f"file not found: {str(path)!r}")
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a UTF-8 text file ({exc})") from exc


def read_vnnlib(
    path: str | Path, num_inputs: int | None = None, num_outputs: int | None = None
) -> VnnlibProperty:
    """Read a VNN-LIB file (``.gz`` too); see the module docstring for the semantics.

    ``num_inputs`` / ``num_outputs``, if given, must match the declared X / Y variables
    (:class:`~lipbound.errors.ShapeError` otherwise). Malformed files (unbalanced parentheses,
    undeclared variables, unknown operators, inputs without a lower or upper bound, constraints
    mixing inputs and outputs) raise :class:`~lipbound.errors.InputError` naming the file and line,
    and so does an input box with a lower bound above its upper bound (unless another disjunct
    of an ``or`` leaves a non-empty box: empty boxes there are dropped).
    """
    path = Path(path)
    return parse_vnnlib(_read_text(path), str(path), num_inputs, num_outputs)


def parse_vnnlib(
    text: str,
    source: str = "<string>",
    num_inputs: int | None = None,
    num_outputs: int | None = None,
) -> VnnlibProperty:
    """:func:`read_vnnlib` on a string (``source`` names it in messages)."""
    reader = Reader(source)
    top, comments = reader.parse(text)
    common, combos = reader.conjoin(read_commands(reader, top))

    n, k = (count_variables(reader, kind) for kind in ("X", "Y"))
    if num_inputs is not None and n != num_inputs:
        raise ShapeError(f"{source}: declares {n} inputs X_i, the network has {num_inputs}")
    if num_outputs is not None and k != num_outputs:
        raise ShapeError(f"{source}: declares {k} outputs Y_j, the network has {num_outputs}")
    regions = _regions(reader, n, k, common, combos)
    return VnnlibProperty(regions, n, k, source, tuple(comments))


def _regions(reader: Reader, n: int, k: int, common: list, combos: list[list]):
    """Group the disjuncts ``common + extra`` by input box; empty boxes are dropped."""
    base = _Split(reader, n, k)
    base.add(common)
    regions: dict[tuple[bytes, bytes], tuple[np.ndarray, np.ndarray, list]] = {}
    empty_box = None
    for extra in combos:
        part = base.copy()
        part.add(extra)
        if part.infeasible:
            continue  # an empty region holds no counterexample
        if bool((part.lower > part.upper).any()):
            empty_box = part if empty_box is None else empty_box
            continue
        part.check_bounded()
        key = (part.lower.tobytes(), part.upper.tobytes())
        if key not in regions:
            regions[key] = (part.lower, part.upper, [])
        regions[key][2].append(part.conjunction())
    if not regions and empty_box is not None:
        raise _empty_box_error(reader.source, empty_box)
    return tuple(
        InputRegion(torch.from_numpy(lo), torch.from_numpy(hi), tuple(conj))
        for lo, hi, conj in regions.values()
    )


def _empty_box_error(source: str, part: _Split) -> InputError:
    """The error for a property whose every input box is empty (lower > upper): a typo, not a
    property that holds vacuously. (An empty box beside non-empty ones, in an ``or``, is
    dropped: it holds no counterexample.)"""
    i = int(np.flatnonzero(part.lower > part.upper)[0])
    return InputError(f"{source}: the input box is empty: X_{i} has lower bound "
                      f"{part.lower[i] + 0.0:g} > upper bound {part.upper[i] + 0.0:g}")


class _Split:
    """The atoms of one disjunct, split into an input box and output rows."""

    def __init__(self, reader: Reader, n: int, k: int) -> None:
        self.reader, self.n, self.k = reader, n, k
        self.lower = np.full(n, -np.inf)
        self.upper = np.full(n, np.inf)
        self.rows: list[tuple[np.ndarray, float]] = []
        self.infeasible = False

    def copy(self) -> _Split:
        other = _Split(self.reader, self.n, self.k)
        other.lower, other.upper = self.lower.copy(), self.upper.copy()
        other.rows, other.infeasible = list(self.rows), self.infeasible
        return other

    def add(self, atoms: Iterable) -> None:
        for coeffs, const, line in atoms:  # sum coeffs * var + const <= 0
            kinds = {kind for kind, _ in coeffs}
            if not kinds:
                self.infeasible |= const > 0
            elif kinds == {"X"}:
                if len(coeffs) != 1:
                    raise self.reader.error(
                        line,
                        f"a constraint couples several inputs ({_fmt(coeffs, const)}); "
                        "only bounds on single inputs X_i are supported",
                    )
                (((_, i), a),) = coeffs.items()
                bound = -const / a
                if a > 0:
                    self.upper[i] = min(self.upper[i], bound)
                else:
                    self.lower[i] = max(self.lower[i], bound)
            elif kinds == {"Y"}:
                row = np.zeros(self.k)
                for (_, j), a in coeffs.items():
                    row[j] = a
                self.rows.append((row, -const))
            else:
                raise self.reader.error(
                    line,
                    f"a constraint mixes inputs and outputs ({_fmt(coeffs, const)}); not supported",
                )

    def check_bounded(self) -> None:
        for name, arr in (("lower", self.lower), ("upper", self.upper)):
            bad = np.flatnonzero(~np.isfinite(arr))
            if bad.size:
                raise InputError(
                    f"{self.reader.source}: input X_{bad[0]} has no {name} bound "
                    f"({bad.size} inputs lack one); lipbound needs a bounded box"
                )

    def conjunction(self) -> Conjunction:
        if not self.rows:
            empty = torch.zeros(0, self.k, dtype=torch.float64)
            return Conjunction(empty, torch.zeros(0, dtype=torch.float64))
        C = torch.from_numpy(np.stack([r for r, _ in self.rows]))
        d = torch.tensor([b for _, b in self.rows], dtype=torch.float64)
        return Conjunction(C, d)


def _fmt(coeffs: dict, const: float) -> str:
    terms = " + ".join(f"{c:g}*{kind}_{i}" for (kind, i), c in sorted(coeffs.items()))
    return f"{terms} + {const:g} <= 0"


# ---------------------------------------------------------------------------- instances CSV
def read_instances(path: str | Path) -> list[Instance]:
    """Read a VNN-COMP ``instances.csv``: rows ``onnx path, vnnlib path, timeout``.

    Relative paths are resolved against the CSV's folder; files are not required to exist
    (benchmark folders often ship a subset; check ``inst.onnx.is_file()``). Blank lines are
    skipped; a row with another number of fields or a bad timeout raises
    :class:`~lipbound.errors.InputError` naming the line.
    """
    path = Path(path)
    text = _read_text(path)
    base = path.parent
    out = []
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not f.strip() for f in row):
            continue
        if len(row) != 3:
            raise InputError(
                f"{path}, line {lineno}: expected 'onnx,vnnlib,timeout', got {len(row)} fields"
            )
        onnx_path, vnnlib_path, timeout = (f.strip() for f in row)
        try:
            seconds = float(timeout)
        except ValueError:
            raise InputError(
                f"{path}, line {lineno}: timeout {timeout!r} is not a number"
            ) from None
        if not math.isfinite(seconds) or seconds <= 0:
            raise InputError(f"{path}, line {lineno}: timeout {timeout!r} must be positive")
        if not onnx_path or not vnnlib_path:
            raise InputError(f"{path}, line {lineno}: empty file name")
        out.append(Instance(base / onnx_path, base / vnnlib_path, seconds))
    return out
