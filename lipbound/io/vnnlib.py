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
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from lipbound.errors import InputError, ShapeError

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

#: Most disjuncts the normal form may have before :func:`read_vnnlib` gives up.
MAX_DISJUNCTS = 100_000


class Conjunction(NamedTuple):
    """``C y <= d`` (all rows): one disjunct of a region's unsafe output set."""

    C: torch.Tensor  # [m, K] float64
    d: torch.Tensor  # [m] float64


@dataclass(frozen=True, eq=False)
class InputRegion:
    """An input box and the output conditions that make a point of it a counterexample."""

    lower: torch.Tensor  # [n] float64
    upper: torch.Tensor  # [n] float64
    disjuncts: tuple[Conjunction, ...]

    @property
    def num_inputs(self) -> int:
        return int(self.lower.numel())

    def contains(self, x: torch.Tensor, tol: float = 0.0) -> bool:
        """Whether the (flattened) input ``x`` lies in the box, up to ``tol``."""
        x = _flat(x, self.num_inputs, "x").to(torch.float64)
        return bool(((x >= self.lower - tol) & (x <= self.upper + tol)).all())

    def spec(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stacked rows ``(C [M, K], d [M], owner [M])``, see :func:`stack_conjunctions`."""
        return stack_conjunctions(self.disjuncts)

    def is_refuted(self, lower_bounds: torch.Tensor) -> bool:
        """:func:`is_refuted` for this region's disjuncts (rows in :meth:`spec` order)."""
        return is_refuted(lower_bounds, self.disjuncts)

    def is_counterexample(self, x: torch.Tensor, y: torch.Tensor, tol: float = 0.0) -> bool:
        """Whether ``x`` lies in the box and ``y`` satisfies some disjunct."""
        return self.contains(x, tol) and is_counterexample(y, self.disjuncts, tol)


@dataclass(frozen=True, eq=False)
class VnnlibProperty:
    """A parsed VNN-LIB file: violated iff some region has a counterexample.

    ``comments`` holds the text of the file's ``;`` comment lines in order (the first one often
    names the label or the radius).
    """

    regions: tuple[InputRegion, ...]
    num_inputs: int
    num_outputs: int
    source: str
    comments: tuple[str, ...] = ()

    def is_counterexample(self, x: torch.Tensor, y: torch.Tensor, tol: float = 0.0) -> bool:
        """Whether the input ``x`` with output ``y`` (= f(x)) violates the property."""
        return any(r.is_counterexample(x, y, tol) for r in self.regions)


@dataclass(frozen=True)
class Instance:
    """One row of a VNN-COMP instances CSV: network, property and time limit (seconds)."""

    onnx: Path
    vnnlib: Path
    timeout: float


# ---------------------------------------------------------------------------- semantics helpers
def _flat(v: torch.Tensor, n: int, what: str) -> torch.Tensor:
    v = torch.as_tensor(v)
    if v.numel() != n:
        raise ShapeError(f"{what} has {v.numel()} elements, expected {n}")
    return v.reshape(n)


def stack_conjunctions(
    disjuncts: Sequence[Conjunction],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack the rows of all disjuncts: ``C [M, K]``, ``d [M]`` and ``owner [M]`` (disjunct index).

    Bound ``C f`` from below over the box, e.g. ``lo, _ = lipbound.output_bounds(model, x0, eps,
    spec=C)``, and pass ``lo`` to :func:`is_refuted`.
    """
    if not disjuncts:
        raise InputError("no disjuncts to stack")
    C = torch.cat([c.C for c in disjuncts])
    d = torch.cat([c.d for c in disjuncts])
    owner = torch.cat(
        [torch.full((c.C.shape[0],), i, dtype=torch.long) for i, c in enumerate(disjuncts)]
    )
    return C, d, owner


def is_refuted(lower_bounds: torch.Tensor, disjuncts: Sequence[Conjunction]) -> bool:
    """Whether certified lower bounds of the stacked rows prove that no disjunct can hold.

    ``lower_bounds[j]`` must be a sound lower bound of ``min over the box of C_j f(x)`` for the
    rows in :func:`stack_conjunctions` order. A disjunct is refuted when one of its rows has
    ``lower_bounds[j] > d[j]``; the region is safe when every disjunct is refuted. A disjunct
    without rows (any output is unsafe) is never refuted.
    """
    lower_bounds = torch.as_tensor(lower_bounds).reshape(-1)
    start = 0
    for c in disjuncts:
        m = c.C.shape[0]
        rows = lower_bounds[start : start + m]
        if rows.numel() != m:
            raise ShapeError(
                f"{lower_bounds.numel()} lower bounds for "
                f"{sum(c.C.shape[0] for c in disjuncts)} rows"
            )
        if not bool((rows.to(torch.float64) > c.d).any()):
            return False
        start += m
    if start != lower_bounds.numel():
        raise ShapeError(f"{lower_bounds.numel()} lower bounds for {start} rows")
    return True


def is_counterexample(y: torch.Tensor, disjuncts: Sequence[Conjunction], tol: float = 0.0) -> bool:
    """Whether the output ``y`` ([K] or [1, K]) satisfies ``C y <= d + tol`` for some disjunct."""
    if not disjuncts:
        return False
    k = disjuncts[0].C.shape[1]
    y = _flat(y, k, "y").to(torch.float64)
    return any(bool((c.C @ y <= c.d + tol).all()) for c in disjuncts)


def center_radius_linf(
    lower: torch.Tensor,
    upper: torch.Tensor,
    data_range: tuple[float, float] | None = (0.0, 1.0),
    atol: float = 1e-6,
) -> tuple[torch.Tensor, float]:
    """Centre ``x0`` and radius ``eps`` of a box that is an l_inf ball clipped to ``data_range``.

    ``eps`` is half the widest width among coordinates touching neither end of the data range
    (all coordinates when ``data_range`` is None, or when every coordinate touches one);
    ``x0 = hi - eps`` where the upper end is below the data maximum, else ``lo + eps`` (clipped
    to the data range). Taking the widest width makes the clipped ball contain the box even when
    the file's bounds carry float32 rounding. Returns ``(x0, eps)`` with ``x0`` float64 of
    ``lower``'s shape, after checking that ``clip([x0 - eps, x0 + eps], data_range)`` reproduces
    the box to ``atol``; raises :class:`~lipbound.errors.InputError` if it does not (e.g. a box
    whose radius differs per channel; call it per channel then).
    """
    lo = torch.as_tensor(lower, dtype=torch.float64)
    hi = torch.as_tensor(upper, dtype=torch.float64)
    if lo.shape != hi.shape or lo.numel() == 0:
        raise InputError(f"lower {list(lo.shape)} and upper {list(hi.shape)} must match")
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()) or bool((lo > hi).any()):
        raise InputError("the box must be finite with lower <= upper")
    if data_range is None:
        dmin, dmax = -math.inf, math.inf
    else:
        dmin, dmax = float(data_range[0]), float(data_range[1])
        if not dmin < dmax:
            raise InputError(f"data_range {data_range} must be (min, max) with min < max")
        if bool((lo < dmin - atol).any() or (hi > dmax + atol).any()):
            raise InputError(f"the box leaves the data range {data_range}")
    width = hi - lo
    free = (lo > dmin + atol) & (hi < dmax - atol)
    eps = float(width[free].max() / 2) if bool(free.any()) else float(width.max())
    x0 = torch.where(hi < dmax - atol, hi - eps, lo + eps).clamp(dmin, dmax)
    rlo = (x0 - eps).clamp(dmin, dmax)
    rhi = (x0 + eps).clamp(dmin, dmax)
    err = max(float((rlo - lo).abs().max()), float((rhi - hi).abs().max()))
    if err > atol:
        raise InputError(
            f"the box is not an l_inf ball of one radius clipped to {data_range}: with radius "
            f"{eps:.6g} it is off by up to {err:.3g} (atol {atol:g})"
        )
    return x0, eps


# ---------------------------------------------------------------------------- tokens and s-exprs
_TOKEN = re.compile(r"\(|\)|;[^\n]*|[^\s();]+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_VAR = re.compile(r"([XY])_(\d+)$")


class _Sym(NamedTuple):
    text: str
    line: int


class _List(NamedTuple):
    items: list
    line: int


class _Reader:
    """Parser state: the source name for messages and the declared variables."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.declared: dict[str, set[int]] = {"X": set(), "Y": set()}

    def error(self, line: int, msg: str) -> InputError:
        return InputError(f"{self.source}, line {line}: {msg}")

    # s-expressions
    def parse(self, text: str) -> tuple[list[_List], list[str]]:
        stack: list[_List] = []
        top: list[_List] = []
        comments: list[str] = []
        line, last = 1, 0
        for m in _TOKEN.finditer(text):
            line += text.count("\n", last, m.start())
            last = m.start()
            tok = m.group()
            if tok[0] == ";":
                comments.append(tok.lstrip(";").strip())
            elif tok == "(":
                stack.append(_List([], line))
            elif tok == ")":
                if not stack:
                    raise self.error(line, "unbalanced parentheses: ')' without '('")
                done = stack.pop()
                (stack[-1].items if stack else top).append(done)
            elif not stack:
                raise self.error(line, f"token {tok!r} outside of any '( ... )'")
            else:
                stack[-1].items.append(_Sym(tok, line))
        if stack:
            raise self.error(
                stack[0].line, f"unbalanced parentheses: {len(stack)} '(' not closed by the end"
            )
        return top, comments

    # terms: a linear expression {var: coef} + const
    def term(self, e) -> tuple[dict[tuple[str, int], float], float]:
        if isinstance(e, _Sym):
            if _NUMBER.match(e.text):
                return {}, float(e.text)
            m = _VAR.match(e.text)
            if m is None:
                raise self.error(
                    e.line, f"unknown token {e.text!r} (expected X_i, Y_j or a number)"
                )
            kind, idx = m.group(1), int(m.group(2))
            if idx not in self.declared[kind]:
                raise self.error(e.line, f"variable {e.text!r} is used but not declared")
            return {(kind, idx): 1.0}, 0.0
        head, args = self.head(e)
        parts = [self.term(a) for a in args]
        if head == "+" and parts:
            return _lin_sum(parts, [1.0] * len(parts))
        if head == "-" and len(parts) == 1:
            return _lin_sum(parts, [-1.0])
        if head == "-" and parts:
            return _lin_sum(parts, [1.0] + [-1.0] * (len(parts) - 1))
        if head == "*" and parts:
            coef, var_part = 1.0, None
            for coeffs, const in parts:
                if coeffs:
                    if var_part is not None:
                        raise self.error(e.line, "non-linear product of variables")
                    var_part = (coeffs, const)
                else:
                    coef *= const
            if var_part is None:
                return {}, coef
            return _lin_sum([var_part], [coef])
        if head == "/" and len(parts) == 2 and not parts[1][0] and parts[1][1] != 0:
            return _lin_sum([parts[0]], [1.0 / parts[1][1]])
        raise self.error(e.line, f"unknown or malformed arithmetic operator {head!r}")

    def head(self, e: _List) -> tuple[str, list]:
        if not e.items or not isinstance(e.items[0], _Sym):
            raise self.error(e.line, "expected '(operator ...)'")
        return e.items[0].text, e.items[1:]

    def conjoin(self, forms: list[tuple[list[list], int]]) -> tuple[list, list[list]]:
        """The conjunction of DNFs (each with its line) as (common atoms, DNF of the rest)."""
        common: list = []  # atoms of the single-disjunct DNFs, shared by every disjunct
        rest: list[list] = [[]]
        for form, line in forms:
            if len(form) == 1:
                common.extend(form[0])
            else:
                rest = _cross(rest, form, self, line)
        return common, rest

    # formulas -> DNF: a list of conjunctions, each a list of atoms (coeffs, const, line)
    # meaning sum coeffs * var + const <= 0
    def dnf(self, e) -> list[list]:
        if isinstance(e, _Sym):
            raise self.error(e.line, f"expected a formula, got {e.text!r}")
        head, args = self.head(e)
        if head == "and":
            common, rest = self.conjoin([(self.dnf(a), e.line) for a in args])
            return [common + extra for extra in rest]
        if head == "or":
            if not args:
                raise self.error(e.line, "empty 'or'")
            out = []
            for a in args:
                out.extend(self.dnf(a))
            if len(out) > MAX_DISJUNCTS:
                raise self.error(e.line, f"more than {MAX_DISJUNCTS} disjuncts")
            return out
        if head in ("<=", ">=", "<", ">", "="):
            if len(args) < 2:
                raise self.error(e.line, f"{head!r} needs two operands")
            terms = [self.term(a) for a in args]
            atoms = []
            for left, right in zip(terms, terms[1:]):
                diff = _lin_sum([left, right], [1.0, -1.0])  # left - right
                if head in ("<=", "<", "="):
                    atoms.append((*diff, e.line))
                if head in (">=", ">", "="):
                    atoms.append((*_lin_sum([diff], [-1.0]), e.line))
            return [atoms]
        raise self.error(e.line, f"unknown operator {head!r} in a formula")


def _lin_sum(parts, weights):
    coeffs: dict = {}
    const = 0.0
    for (c, k), w in zip(parts, weights):
        for var, v in c.items():
            coeffs[var] = coeffs.get(var, 0.0) + w * v
        const += w * k
    return {v: c for v, c in coeffs.items() if c != 0.0}, const


def _cross(a: list[list], b: list[list], reader: _Reader, line: int) -> list[list]:
    if len(a) * len(b) > MAX_DISJUNCTS:
        raise reader.error(line, f"the normal form has more than {MAX_DISJUNCTS} disjuncts")
    return [x + y for x in a for y in b]


# ---------------------------------------------------------------------------- reading
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
    reader = _Reader(source)
    top, comments = reader.parse(text)
    asserts = []
    for e in top:
        head, args = reader.head(e)
        if head == "declare-const":
            _declare(reader, e, args)
        elif head == "assert":
            if len(args) != 1:
                raise reader.error(e.line, "'assert' takes one formula")
            asserts.append((reader.dnf(args[0]), e.line))
        elif head in ("check-sat", "get-model", "exit", "set-logic", "set-info", "set-option"):
            continue
        else:
            raise reader.error(e.line, f"unknown command {head!r}")
    common, combos = reader.conjoin(asserts)

    n, k = (_count(reader, kind) for kind in ("X", "Y"))
    if num_inputs is not None and n != num_inputs:
        raise ShapeError(f"{source}: declares {n} inputs X_i, the network has {num_inputs}")
    if num_outputs is not None and k != num_outputs:
        raise ShapeError(f"{source}: declares {k} outputs Y_j, the network has {num_outputs}")

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
        raise _empty_box_error(source, empty_box)
    out = tuple(
        InputRegion(torch.from_numpy(lo), torch.from_numpy(hi), tuple(conj))
        for lo, hi, conj in regions.values()
    )
    return VnnlibProperty(out, n, k, source, tuple(comments))


def _empty_box_error(source: str, part: _Split) -> InputError:
    """The error for a property whose every input box is empty (lower > upper): a typo, not a
    property that holds vacuously. (An empty box beside non-empty ones, in an ``or``, is
    dropped: it holds no counterexample.)"""
    i = int(np.flatnonzero(part.lower > part.upper)[0])
    return InputError(f"{source}: the input box is empty: X_{i} has lower bound "
                      f"{part.lower[i] + 0.0:g} > upper bound {part.upper[i] + 0.0:g}")


def _declare(reader: _Reader, e: _List, args: list) -> None:
    if len(args) != 2 or not all(isinstance(a, _Sym) for a in args):
        raise reader.error(e.line, "expected (declare-const NAME Real)")
    name, sort = args
    m = _VAR.match(name.text)
    if m is None:
        raise reader.error(name.line, f"variable {name.text!r}: VNN-LIB names are X_i and Y_j")
    if sort.text != "Real":
        raise reader.error(sort.line, f"variable {name.text!r} has sort {sort.text!r}, not Real")
    kind, idx = m.group(1), int(m.group(2))
    if idx in reader.declared[kind]:
        raise reader.error(name.line, f"variable {name.text!r} declared twice")
    reader.declared[kind].add(idx)


def _count(reader: _Reader, kind: str) -> int:
    idx = reader.declared[kind]
    if not idx:
        raise InputError(f"{reader.source}: no {kind}_i variables declared")
    if idx != set(range(len(idx))):
        missing = sorted(set(range(max(idx) + 1)) - idx)[:5]
        raise InputError(
            f"{reader.source}: {kind} variables are not numbered 0..{max(idx)}: missing {missing}"
        )
    return len(idx)


class _Split:
    """The atoms of one disjunct, split into an input box and output rows."""

    def __init__(self, reader: _Reader, n: int, k: int) -> None:
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
