"""Wall-clock limits for verification: a deadline and a way to stop long computations at it."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator


class Expired(BaseException):
    """Raised inside a computation interrupted at its deadline.

    A ``BaseException`` so that library code catching ``Exception`` cannot swallow it.
    """


class Deadline:
    """A point in time ``seconds`` from now (``math.inf``: none)."""

    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.end = self.start + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.perf_counter())

    def expired(self) -> bool:
        return time.perf_counter() >= self.end

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


@contextlib.contextmanager
def interrupt_at(deadline: Deadline) -> Iterator[None]:
    """Raise :class:`Expired` inside the block when the deadline passes.

    Uses ``SIGALRM`` and so works only in the main thread of a POSIX process; elsewhere the
    block runs to completion and callers rely on their own checks between steps. A pending
    alarm of the caller is not supported (it is replaced for the duration of the block).
    """
    usable = (threading.current_thread() is threading.main_thread()
              and hasattr(signal, "setitimer") and math.isfinite(deadline.end))
    if not usable:
        yield
        return
    if deadline.expired():
        raise Expired()

    def _fire(signum, frame):  # noqa: ARG001
        raise Expired()

    previous = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, max(deadline.remaining(), 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
