"""The versioned JSON bound-report schema and its validator (no external dependency).

Every record is one JSON object. Keys common to all records:

===============  ==========================================================================
key              meaning
===============  ==========================================================================
schema_version   ``"lipbound.report/<N>"`` (this module's :data:`SCHEMA_VERSION`)
kind             one of :data:`KINDS`
lipbound         lipbound version that produced the record
environment      versions: ``python``, ``platform``, ``torch``, ``numpy``, ``cvxpy``,
                 ``highs``, ``scs`` (``"absent"`` when not installed)
device           where the computation ran (``"cpu"``, ``"cuda:0 (NVIDIA H100)"``)
seed             the random seed used (attacks, sampling), or null
dtype            the dtype of the bound computation (``"float64"``)
model            ``{"hash": "sha256:...", "name": str | null}``
status           ``"certified"``, ``"timeout"``, ``"unknown"``, a verdict (monotonicity), ...
time             seconds spent
===============  ==========================================================================

Records of a bound (every kind but ``weights``) also have

- ``domain``: ``norm`` (``"inf"``, 2, 1 or ``"box"``), ``eps`` (number or null),
  ``center_hash`` (``"sha256:..."`` of the center tensor, or null), optional ``center``
  (values, written for small inputs), ``data_range`` (``[lo, hi]`` or null) and optional
  ``lower`` / ``upper`` (a box domain's corners);
- ``spec`` (object: what was bounded), ``method`` (str), ``settings`` (object);
- ``upper``, ``lower``: number, list of numbers, or null; ``gap``: ``max(upper - lower)`` over
  rows, or null.

Numbers are finite JSON numbers, or the strings ``"inf"`` / ``"-inf"`` (JSON has no infinity).
``weights`` records carry ``layers``: a list of ``{name, kind, shape, spectral_norm,
condition_number, sparsity}``. Optional in every record: ``input`` (``index``, ``label``...),
``details`` (object), ``trace`` (anytime curve: list of ``[t, upper, lower]``).

``smoothing`` records (the only records randomized smoothing writes, built by
:func:`lipbound.report.records.smoothing_record`) also carry the smoothing row beside these
keys: ``idx``, ``label``, ``predict`` (-1 = abstain), ``radius`` (= ``lower``), ``correct`` and
``certificate`` (Cohen et al.'s TSV columns; ``details`` holds the certificate's details).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lipbound.errors import InputError

SCHEMA_VERSION = "lipbound.report/1"

KINDS = ("output_bounds", "lipschitz", "smoothing", "monotonicity", "certified_radius",
         "counterfactual_stability", "weights")
BOUND_KINDS = tuple(k for k in KINDS if k != "weights")
ENVIRONMENT_KEYS = ("python", "platform", "torch", "numpy", "cvxpy", "highs", "scs")


class SchemaError(InputError):
    """A record does not follow the bound-report schema (the message names the key)."""


def is_number(v: Any) -> bool:
    """A JSON number of the schema: int/float (not bool), or "inf" / "-inf"."""
    if isinstance(v, bool):
        return False
    return isinstance(v, (int, float)) or v in ("inf", "-inf")


def _number_or_list(v: Any) -> bool:
    if isinstance(v, list):
        return all(_number_or_list(e) for e in v)
    return is_number(v)


def _nullable(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


_str = lambda v: isinstance(v, str)  # noqa: E731
_dict = lambda v: isinstance(v, dict)  # noqa: E731
_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731

COMMON: dict[str, tuple[Callable[[Any], bool], str]] = {
    "schema_version": (_str, "a string"),
    "kind": (_str, "a string"),
    "lipbound": (_str, "a string"),
    "environment": (_dict, "an object"),
    "device": (_str, "a string"),
    "seed": (_nullable(_int), "an integer or null"),
    "dtype": (_str, "a string"),
    "model": (_dict, "an object"),
    "status": (_str, "a string"),
    "time": (is_number, "a number"),
}
BOUND: dict[str, tuple[Callable[[Any], bool], str]] = {
    "domain": (_dict, "an object"),
    "spec": (_dict, "an object"),
    "method": (_str, "a string"),
    "settings": (_dict, "an object"),
    "upper": (_nullable(_number_or_list), "a number, a list of numbers or null"),
    "lower": (_nullable(_number_or_list), "a number, a list of numbers or null"),
    "gap": (_nullable(is_number), "a number or null"),
}
DOMAIN: dict[str, tuple[Callable[[Any], bool], str]] = {
    "norm": (lambda v: v in ("inf", "box") or (is_number(v) and not isinstance(v, str)),
             '"inf", "box" or a number'),
    "eps": (_nullable(is_number), "a number or null"),
    "center_hash": (_nullable(_str), "a string or null"),
    "data_range": (_nullable(lambda v: isinstance(v, list) and len(v) == 2
                             and all(_number_or_list(e) for e in v)),
                   "[lo, hi] or null"),
}
LAYER: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (_str, "a string"),
    "kind": (_str, "a string"),
    "shape": (lambda v: isinstance(v, list) and all(_int(e) for e in v), "a list of integers"),
    "spectral_norm": (_nullable(is_number), "a number or null"),
    "condition_number": (_nullable(is_number), "a number or null"),
    "sparsity": (_nullable(is_number), "a number or null"),
}
OPTIONAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "input": (_dict, "an object"),
    "details": (_dict, "an object"),
    "trace": (lambda v: isinstance(v, list) and all(
        isinstance(p, list) and len(p) == 3 and all(e is None or is_number(e) for e in p)
        for p in v), "a list of [t, upper, lower]"),
}


def _check(obj: dict, fields: dict, where: str, required: bool = True) -> None:
    for key, (ok, what) in fields.items():
        if key not in obj:
            if required:
                raise SchemaError(f"{where}: missing required key {key!r}")
            continue
        if not ok(obj[key]):
            raise SchemaError(f"{where}: key {key!r} must be {what}, got {obj[key]!r:.80}")


def validate(record: Any) -> dict:
    """Check that ``record`` follows the schema; return it, or raise :class:`SchemaError`.

    Checks the schema version, the required keys of the record's kind and their types; keys not
    in the schema are allowed (forward compatibility within a version).
    """
    if not isinstance(record, dict):
        raise SchemaError(f"a report record must be a JSON object, got {type(record).__name__}")
    _check(record, COMMON, "record")
    if record["schema_version"] != SCHEMA_VERSION:
        raise SchemaError(f"record: schema_version {record['schema_version']!r} is not "
                          f"{SCHEMA_VERSION!r}")
    kind = record["kind"]
    if kind not in KINDS:
        raise SchemaError(f"record: unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    missing = [k for k in ENVIRONMENT_KEYS if not isinstance(record["environment"].get(k), str)]
    if missing:
        raise SchemaError(f"record.environment: missing version(s) {missing}")
    if not _str(record["model"].get("hash")):
        raise SchemaError("record.model: missing required key 'hash'")
    _check(record, OPTIONAL, "record", required=False)
    if kind == "weights":
        layers = record.get("layers")
        if not isinstance(layers, list):
            raise SchemaError("weights record: key 'layers' must be a list")
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict):
                raise SchemaError(f"weights record: layers[{i}] must be an object")
            _check(layer, LAYER, f"weights record: layers[{i}]")
        return record
    _check(record, BOUND, f"{kind} record")
    _check(record["domain"], DOMAIN, f"{kind} record.domain")
    return record
