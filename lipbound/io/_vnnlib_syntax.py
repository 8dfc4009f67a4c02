"""The syntax of VNN-LIB 1.0: tokens, s-expressions, linear terms and formulas in DNF.

:class:`Reader` tokenizes a file into s-expressions (collecting ``;`` comments), reads linear
terms ``{var: coef} + const`` and brings asserted formulas into disjunctive normal form: a list of
conjunctions, each a list of atoms ``(coeffs, const, line)`` meaning ``sum coeffs * var + const
<= 0``. :func:`read_commands` runs the top-level commands (declarations, asserts) and
:func:`count_variables` checks the declared ``X_i`` / ``Y_j``. Errors name the source and line.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from lipbound.errors import InputError

#: Most disjuncts the normal form may have before :func:`~lipbound.io.read_vnnlib` gives up.
MAX_DISJUNCTS = 100_000

_TOKEN = re.compile(r"\(|\)|;[^\n]*|[^\s();]+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_VAR = re.compile(r"([XY])_(\d+)$")


class _Sym(NamedTuple):
    text: str
    line: int


class _List(NamedTuple):
    items: list
    line: int


class Reader:
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


def _cross(a: list[list], b: list[list], reader: Reader, line: int) -> list[list]:
    if len(a) * len(b) > MAX_DISJUNCTS:
        raise reader.error(line, f"the normal form has more than {MAX_DISJUNCTS} disjuncts")
    return [x + y for x in a for y in b]


def read_commands(reader: Reader, top: list) -> list[tuple[list[list], int]]:
    """Run the top-level commands: declare the variables, return each assert's DNF and line."""
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
    return asserts


def _declare(reader: Reader, e: _List, args: list) -> None:
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


def count_variables(reader: Reader, kind: str) -> int:
    idx = reader.declared[kind]
    if not idx:
        raise InputError(f"{reader.source}: no {kind}_i variables declared")
    if idx != set(range(len(idx))):
        missing = sorted(set(range(max(idx) + 1)) - idx)[:5]
        raise InputError(
            f"{reader.source}: {kind} variables are not numbered 0..{max(idx)}: missing {missing}"
        )
    return len(idx)
