"""In-process execution, one job after the other: the default backend.

Timeouts use ``SIGALRM`` (POSIX, main thread only): when a job's time is up, the next Python
bytecode it runs raises :class:`~lipbound.executor.base.JobTimeout`, which becomes a "timeout"
record. A single long native call (one huge matrix product) is only interrupted when it returns.
There is no separate worker, so ``retries`` has nothing to retry: a crash of the process ends
the run (use the ``process`` or ``ray`` backend when jobs may crash).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lipbound.errors import InputError
from lipbound.executor.base import (
    Executor,
    JobFn,
    JobRecord,
    alarm_usable,
    run_job,
)


class LocalExecutor(Executor):
    """Runs every job in the calling process, in input order."""

    name = "local"

    def _map(self, fn: JobFn, jobs: Iterator[tuple[int, Any, int]], timeout: float | None,
             retries: int) -> Iterator[JobRecord]:
        if timeout is not None and not alarm_usable():
            raise InputError("in-process job timeouts need SIGALRM in the main thread; "
                             "use the 'process' or 'ray' backend here")
        return _run(fn, jobs, timeout)


def _run(fn: JobFn, jobs: Iterator[tuple[int, Any, int]],
         timeout: float | None) -> Iterator[JobRecord]:
    for index, item, seed in jobs:
        out = run_job(fn, item, seed, timeout)
        yield JobRecord(index, out.status, out.result, out.error, out.time, 1)
