"""Input norms: parse a norm spec, and the Hoelder dual exponent (one home for every user)."""

from __future__ import annotations

import math
import numbers

from lipbound.errors import UnsupportedNormError

_NORM_NAMES = {"inf": math.inf, "infinity": math.inf, "linf": math.inf, "l_inf": math.inf,
               "2": 2.0, "2.0": 2.0, "l2": 2.0, "l_2": 2.0,
               "1": 1.0, "1.0": 1.0, "l1": 1.0, "l_1": 1.0}


def parse_norm(norm: float | int | str) -> float:
    """Normalise a norm spec to ``math.inf``, ``2.0`` or ``1.0``: a number (not a bool) or a
    name (``"inf"``, ``"linf"``, ``"l_inf"``, ``"infinity"``, ``"2"``, ``"l2"``, ``"1"``,
    ``"l1"``...); anything else is an :class:`UnsupportedNormError`."""
    if isinstance(norm, str):
        key = norm.strip().lower()
        if key in _NORM_NAMES:
            return _NORM_NAMES[key]
    elif isinstance(norm, numbers.Real) and not isinstance(norm, bool):
        if float(norm) in (math.inf, 2.0, 1.0):
            return float(norm)
    raise UnsupportedNormError(
        f"unsupported norm {norm!r}: norm must be inf, 2 or 1 (lipbound supports the l_inf "
        "(norm=float('inf') or 'inf'), l_2 (norm=2) and l_1 (norm=1) input norms)"
    )


def dual_norm(p: float | int | str) -> float:
    """Hoelder dual exponent: inf <-> 1, 2 <-> 2."""
    return {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}[parse_norm(p)]
