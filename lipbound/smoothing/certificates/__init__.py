"""Smoothing certificates, selectable by name (``Smooth.certify(..., certificate=NAME)``).

========================  ============================================================
name                      what it certifies (module)
========================  ============================================================
``cohen``                 hard votes, Clopper–Pearson, ``sigma Phi^-1(p_A)`` (cohen.py)
``lvm``                   soft scores, empirical Bernstein, margin radius (lvm.py)
``lipschitz``             soft scores + global Lipschitz constant, ``int dp / G_L`` (lipschitz.py)
``local-margins``         hard votes + per-sample base radii, ``R + sigma Phi^-1(q_low)``
``dual``                  DRS, two half-resolution sub-images (dual.py)
``best``                  several of these with alpha split (best.py)
========================  ============================================================

Requirements: ``cohen``, ``lvm`` and ``dual`` need forward passes only and certify any eval-mode
classifier (``dual`` also a ``DualPair``); ``local-margins`` (engine radius functions) and
``lipschitz`` without a given constant need a model lipbound's engine can trace
(``Certificate.check``; ``best`` skips what does not apply and says why).
"""

from __future__ import annotations

import functools
import inspect

from lipbound.errors import InputError, UnknownMethodError
from lipbound.smoothing.certificates.base import Certificate, Certification, Context, Plan
from lipbound.smoothing.certificates.best import Best
from lipbound.smoothing.certificates.cohen import Cohen
from lipbound.smoothing.certificates.dual import Dual, DualPair
from lipbound.smoothing.certificates.lipschitz import Lipschitz
from lipbound.smoothing.certificates.local_margins import LocalMargins
from lipbound.smoothing.certificates.lvm import LVM

CERTIFICATES: dict[str, type[Certificate]] = {
    "cohen": Cohen,
    "lvm": LVM,
    "lipschitz": Lipschitz,
    "local-margins": LocalMargins,
    "dual": Dual,
}
NAMES = (*CERTIFICATES, "best")


@functools.cache
def _accepted(cls: type) -> frozenset[str]:
    """Keyword options of a certificate class (cached: ``inspect.signature`` of a class without
    its own ``__init__`` parses ``object.__init__``'s text signature, about 2 ms)."""
    if cls.__init__ is object.__init__:
        return frozenset()
    params = inspect.signature(cls.__init__).parameters
    return frozenset(k for k in params if k != "self")


def _construct(cls: type, options: dict) -> Certificate:
    unknown = set(options) - _accepted(cls)
    if unknown:
        raise InputError(
            f"certificate {cls.name!r} does not take option(s) {sorted(unknown)}; "
            f"it takes {sorted(_accepted(cls)) or 'none'}"
        )
    return cls(**options)


def _default_best_candidates(has_dual: bool) -> list[str]:
    """cohen, lvm, lipschitz, local-margins and, with a DRS pair, dual. ``Best`` skips those
    whose check fails on the model (``details["skipped"]`` says why); local-margins is
    optional: skipped where it does not pay."""
    names = ["cohen", "lvm", "lipschitz", "local-margins"]
    if has_dual:
        names.append("dual")
    return names


def build(name, model=None, has_dual: bool = False, example_input=None,
          **options) -> Certificate:
    """A certificate from a name (or an instance, returned as is) and keyword options.

    For ``best``: ``candidates`` (names or instances; default: all, those that do not apply
    to the model skipped), ``weights``, ``mode``, ``optional`` (names ``best`` may skip where
    they do not pay; default ``("local-margins",)`` when ``candidates`` is not given, none when
    it is), and any option of the candidates, routed to those that accept it.
    """
    if isinstance(name, Certificate):
        if options:
            raise InputError("options cannot be combined with a Certificate instance")
        return name
    if not isinstance(name, str):
        raise InputError(f"certificate must be a name or a Certificate, got {type(name).__name__}")
    if name in CERTIFICATES:
        return _construct(CERTIFICATES[name], options)
    if name != "best":
        raise UnknownMethodError(f"unknown certificate {name!r}; choose from {', '.join(NAMES)}")
    best_keys = {"candidates", "weights", "mode", "optional"}
    own = {k: v for k, v in options.items() if k in best_keys}
    rest = {k: v for k, v in options.items() if k not in best_keys}
    cands = own.pop("candidates", None)
    if cands is None:
        cands = _default_best_candidates(has_dual)
        own.setdefault("optional", ("local-margins",))
    built: list[Certificate] = []
    used: set[str] = set()
    for c in cands:
        if isinstance(c, Certificate):
            built.append(c)
            continue
        if c not in CERTIFICATES:
            raise UnknownMethodError(
                f"unknown candidate certificate {c!r}; choose from {', '.join(CERTIFICATES)}"
            )
        cls = CERTIFICATES[c]
        mine = {k: v for k, v in rest.items() if k in _accepted(cls)}
        used |= set(mine)
        built.append(cls(**mine))
    unused = set(rest) - used
    if unused:
        raise InputError(f"best: no candidate takes option(s) {sorted(unused)}")
    return Best(built, **own)


__all__ = [
    "CERTIFICATES",
    "LVM",
    "NAMES",
    "Best",
    "Certificate",
    "Certification",
    "Cohen",
    "Context",
    "Dual",
    "DualPair",
    "Lipschitz",
    "LocalMargins",
    "Plan",
    "build",
]
