"""Progress bars for long work (branch-and-bound, certification over data sets, audits).

One switch for the whole library: every long loop takes ``progress: bool`` and calls
:func:`bar`; with ``progress=False`` (or when stderr is not a terminal and the caller asks for
``"auto"``) nothing is printed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, Literal

from tqdm.auto import tqdm

ProgressFlag = bool | Literal["auto"]


def enabled(progress: ProgressFlag) -> bool:
    """Resolve ``"auto"`` to whether stderr is an interactive terminal."""
    if progress == "auto":
        return sys.stderr.isatty()
    return bool(progress)


def bar(
    iterable: Iterable | None = None, *, progress: ProgressFlag = "auto", **kwargs: Any
) -> tqdm:
    """A tqdm bar on stderr, disabled unless ``progress`` resolves to True."""
    return tqdm(iterable, disable=not enabled(progress), file=sys.stderr, dynamic_ncols=True,
                **kwargs)
