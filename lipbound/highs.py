"""HiGHS without its banner on stdout.

highspy prints "Running HiGHS ..." on the C-level standard output when a process constructs
its first ``highspy.Highs`` object, before ``output_flag=False`` can be set on it; in a
``--json`` run that line would corrupt the JSON on stdout. :func:`new_highs` constructs
solvers with file descriptor 1 pointed at ``os.devnull``; :func:`silence_banner` does it once
before solvers that construct their own ``Highs`` (cvxpy's HiGHS interface), since the banner
is printed once per process.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def stdout_silenced() -> Iterator[None]:
    """Point file descriptor 1 at ``os.devnull`` for the block (C-level writes included).

    Process-wide while it lasts: keep the block short. Does nothing where fd 1 cannot be
    duplicated."""
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 1)
        finally:
            os.close(null)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def new_highs() -> Any:
    """A ``highspy.Highs`` with all output off, constructed without printing its banner."""
    import highspy

    with stdout_silenced():
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    return h


@functools.cache
def silence_banner() -> None:
    """Let HiGHS print its once-per-process banner to ``os.devnull`` (call it before a
    solver that constructs its own ``Highs``, such as cvxpy's HiGHS interface)."""
    new_highs()


def fit_thread_pool(threads: int | None) -> None:
    """Let the next HiGHS solve run with ``threads`` threads.

    HiGHS runs every solve of a process on one global thread pool, sized by the solve that
    starts it; a later solve that names another ``threads`` count fails at once (cvxpy reports
    only "Solver 'HIGHS' failed"), so a ``method="exact"`` run with the default count would
    switch off the verification MILP (one thread) for the rest of the process. Before a solve
    that names a count, this drops the pool so that the solve sizes it anew (microseconds); a
    solve naming none (0, the default) runs on whatever pool exists. Not for use while another
    thread of the process is inside a HiGHS solve."""
    if threads:
        import highspy

        highspy.Highs.resetGlobalScheduler(True)
