"""The executor contract shared by every backend: job records, per-input seeds, running one job.

A *job function* is a picklable callable ``fn(item, seed) -> result`` (a module-level function
or an instance of a module-level class). ``Executor.map(fn, items, seed=S)`` runs
``fn(items[i], derive_seed(S, i))`` for every ``i`` and yields one :class:`JobRecord` per input
as the jobs finish. Because each input's seed depends only on ``(S, i)``, the records do not
depend on the backend, the number of workers or the order in which jobs ran.
"""

from __future__ import annotations

import contextlib
import numbers
import pickle
import signal
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from lipbound.errors import InputError, LipboundError

Status = Literal["ok", "timeout", "error"]
STATUSES: tuple[str, ...] = ("ok", "timeout", "error")
DEFAULT_RETRIES = 2
SEED_BITS = 62  # derived seeds lie in [0, 2**62), accepted by torch and numpy generators

JobFn = Callable[[Any, int], Any]


@dataclass(frozen=True)
class JobRecord:
    """Outcome of the job for input ``index``.

    ``status``: "ok" (``result`` holds fn's return value), "error" (fn raised, or its worker
    died on every attempt; ``error`` says which) or "timeout" (the job was stopped after
    ``timeout`` seconds). ``time``: wall seconds of the final attempt. ``attempts``: how many
    times the job was started (more than 1 only after a worker died).
    """

    index: int
    status: Status
    result: Any = None
    error: str | None = None
    time: float = 0.0
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for the JSON Lines report)."""
        return asdict(self)


class Outcome(NamedTuple):
    """What one attempt of a job returned inside its worker."""

    status: Status
    result: Any
    error: str | None
    time: float


class JobTimeout(BaseException):
    """Raised inside an in-process job when its time is up (a BaseException, so a job's own
    ``except Exception`` cannot swallow it)."""


def derive_seed(base_seed: int, index: int) -> int:
    """Seed of input ``index`` under base seed ``base_seed``: a pure function of the pair.

    Uses numpy's ``SeedSequence(base_seed, spawn_key=(index,))``, so seeds of different
    indices are statistically independent streams and never depend on partitioning.
    """
    words = np.random.SeedSequence(base_seed, spawn_key=(index,)).generate_state(2, np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) >> (64 - SEED_BITS)


def run_job(fn: JobFn, item: Any, seed: int, timeout: float | None = None) -> Outcome:
    """Run one attempt of ``fn(item, seed)``, turning an exception into an "error" outcome.

    With ``timeout`` (seconds) and SIGALRM usable (POSIX main thread), the job is interrupted
    at its next Python bytecode after ``timeout`` seconds and the outcome is "timeout".
    Otherwise no in-worker limit is set (the executor's driver enforces it by killing).
    """
    t0 = time.perf_counter()
    try:
        with deadline(timeout if alarm_usable() else None):
            result = fn(item, seed)
    except JobTimeout:
        return Outcome("timeout", None, f"job exceeded its timeout of {timeout:g} s",
                       time.perf_counter() - t0)
    except Exception as exc:  # the job's failure becomes its record, the run goes on
        msg = f"{type(exc).__name__}: {exc}"
        if not _is_lipbound_error(exc):
            msg += "\n" + "".join(traceback.format_exception(exc)[-3:])
        return Outcome("error", None, msg, time.perf_counter() - t0)
    return Outcome("ok", result, None, time.perf_counter() - t0)


def alarm_usable() -> bool:
    """Whether SIGALRM-based deadlines work here (POSIX, main thread)."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _raise_timeout(signum: int, frame: Any) -> None:
    raise JobTimeout()


@contextlib.contextmanager
def deadline(timeout: float | None) -> Iterator[None]:
    """Raise JobTimeout in this (main) thread after ``timeout`` seconds; no-op for None."""
    if timeout is None:
        yield
        return
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _is_lipbound_error(exc: BaseException) -> bool:
    return isinstance(exc, LipboundError)


def check_map_args(seed: Any, timeout: Any, retries: Any) -> tuple[int, float | None, int]:
    """Validated (seed, timeout, retries) of ``Executor.map``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not timeout > 0:
            raise InputError(f"timeout must be a positive number of seconds or None, got "
                             f"{timeout!r}")
        timeout = float(timeout)
    if isinstance(retries, bool) or not isinstance(retries, numbers.Integral) or retries < 0:
        raise InputError(f"retries must be a non-negative integer, got {retries!r}")
    return int(seed), timeout, int(retries)


@dataclass
class PendingJob:
    """A job a backend still has to run: its input, its seed and the attempts made so far."""

    index: int
    item: Any
    seed: int
    attempts: int = 0


def died_record(index: int, attempts: int, why: str, elapsed: float) -> JobRecord:
    """The record of a job whose worker died on every one of its ``attempts``."""
    return JobRecord(index, "error", None,
                     f"WorkerDied: {why} (on all {attempts} attempts)", elapsed, attempts)


class Executor(ABC):
    """Runs per-input jobs and streams their :class:`JobRecord` as they finish.

    ``retries``: how many times a job is resubmitted after its *worker process died* (crash,
    out-of-memory kill, lost node). An exception raised by the job itself is not retried: with
    its seed fixed, a rerun would fail the same way; it becomes an "error" record. A job still
    running after ``timeout`` seconds is stopped and gives a "timeout" record.
    """

    name: str = "executor"

    def map(self, fn: JobFn, items: Iterable[Any], *, seed: int,
            timeout: float | None = None, retries: int = DEFAULT_RETRIES,
            keys: Sequence[int] | None = None) -> Iterator[JobRecord]:
        """Yield one record per item, in completion order (sort by ``index`` for input order).

        ``keys``: the inputs' numbers in their source data set (default: positions 0..N-1);
        item ``i`` gets the seed ``derive_seed(seed, keys[i])``, so a run over a subset of rows
        gives those rows the seeds of the full run. Records are indexed by position."""
        seed, timeout, retries = check_map_args(seed, timeout, retries)
        if not callable(fn):
            raise InputError(f"fn must be callable, got {type(fn).__name__}")
        if keys is not None:
            keys = [int(k) for k in keys]
            if any(k < 0 for k in keys) or len(set(keys)) != len(keys):
                raise InputError("keys must be distinct non-negative integers")
        return self._map(fn, _triples(items, seed, keys), timeout, retries)

    @abstractmethod
    def _map(self, fn: JobFn, jobs: Iterator[tuple[int, Any, int]], timeout: float | None,
             retries: int) -> Iterator[JobRecord]:
        """Run ``fn(item, seed)`` for every ``(index, item, seed)`` of ``jobs``."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release workers (and a Ray instance this executor started)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _triples(items: Iterable[Any], seed: int,
             keys: list[int] | None) -> Iterator[tuple[int, Any, int]]:
    for i, item in enumerate(items):
        if keys is not None and i >= len(keys):
            raise InputError(f"more items than keys ({len(keys)})")
        yield i, item, derive_seed(seed, i if keys is None else keys[i])


def check_picklable(fn: JobFn) -> None:
    """Raise InputError unless ``fn`` can be sent to another process."""
    try:
        pickle.dumps(fn)
    except Exception as exc:
        raise InputError(f"the job function must be picklable (a module-level function or "
                         f"an instance of a module-level class) for this backend: {exc}") from exc


def in_order(records: Iterable[JobRecord]) -> list[JobRecord]:
    """All records sorted by input index."""
    return sorted(records, key=lambda r: r.index)
