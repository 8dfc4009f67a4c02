"""A pool of local worker processes with per-job timeouts and retries after worker crashes.

Workers start on the first ``map`` and stay up until ``close()``. Each receives the job
function once per map, then one job at a time; it reports when a job starts and when it ends.
The driver waits on the workers' pipes and process sentinels together, so a finished job, a
dead worker and an expired deadline are all noticed at once. A job that ignores its in-worker
timeout has its worker killed (and replaced): the record says "timeout". A worker that dies
mid-job (crash, OOM kill) is replaced and the job resubmitted up to ``retries`` times.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import time
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import wait
from typing import Any

import torch

from lipbound.errors import InputError
from lipbound.executor.base import (
    Executor,
    JobFn,
    JobRecord,
    Outcome,
    PendingJob,
    check_picklable,
    died_record,
    run_job,
)


def _worker_main(conn: Any, threads: int) -> None:
    """Body of a worker process: take a job function, then jobs, until told to stop."""
    torch.set_num_threads(threads)
    fn = None
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        if msg[0] == "fn":
            fn = msg[1]
            continue
        _, index, item, seed, timeout = msg
        conn.send(("start", index))
        out = run_job(fn, item, seed, timeout)
        try:
            conn.send(("done", index, out))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            conn.send(("done", index, Outcome("error", None, f"result is not picklable: {exc}",
                                              out.time)))


class _Worker:
    """One worker process, its pipe, and the job it runs (``running`` once it started)."""

    def __init__(self, ctx: Any, threads: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, threads), daemon=True)
        self.proc.start()
        child.close()
        self.fn_version = -1
        self.job: PendingJob | None = None
        self.running = False
        self.started = 0.0

    def assign(self, job: PendingJob, fn: JobFn, version: int, timeout: float | None) -> None:
        if self.fn_version != version:
            self.conn.send(("fn", fn))
            self.fn_version = version
        job.attempts += 1
        self.job, self.running = job, False
        self.conn.send(("job", job.index, job.item, job.seed, timeout))

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()

    def stop(self, grace: float = 5.0) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(grace)
        self.kill()


class ProcessExecutor(Executor):
    """Runs jobs in ``workers`` local processes (default: one per CPU core).

    ``start_method``: "forkserver" (default where available: a clean server process with
    lipbound preloaded forks the workers; safe with threads and CUDA), "spawn", or "fork"
    (fastest start; CPU only, and each worker then uses one torch thread: OpenMP thread pools do
    not survive a fork). Job functions and items must be picklable. Each worker uses
    ``threads`` torch threads (default: cores / workers, at least 1). Timeouts: the worker
    interrupts its job after ``timeout`` seconds (SIGALRM); a job deaf to that (stuck in one
    native call) has its worker killed ``kill_grace`` seconds later. Either way the record
    says "timeout". Call :meth:`close` (or use ``with``) to stop the workers.
    """

    name = "process"

    def __init__(self, workers: int | None = None, start_method: str | None = None,
                 threads: int | None = None, kill_grace: float = 10.0) -> None:
        cores = os.cpu_count() or 1
        self.workers = _positive("workers", workers if workers is not None else cores)
        self.threads = _positive("threads", threads or max(1, cores // self.workers))
        methods = mp.get_all_start_methods()
        self.start_method = start_method or ("forkserver" if "forkserver" in methods
                                             else "spawn")
        if self.start_method not in methods:
            raise InputError(f"start_method must be one of {methods}, got {start_method!r}")
        if self.start_method == "fork":
            self.threads = 1
        if not kill_grace >= 0:
            raise InputError(f"kill_grace must be >= 0 seconds, got {kill_grace!r}")
        self.kill_grace = float(kill_grace)
        self._pool: _Pool | None = None

    def _get_pool(self) -> _Pool:
        if self._pool is None:
            ctx = mp.get_context(self.start_method)
            if self.start_method == "forkserver":
                ctx.set_forkserver_preload(["lipbound.executor.process"])
            self._pool = _Pool(ctx, self.workers, self.threads)
        return self._pool

    def _map(self, fn: JobFn, triples: Iterator[tuple[int, Any, int]],
             timeout: float | None, retries: int) -> Iterator[JobRecord]:
        check_picklable(fn)
        jobs = (PendingJob(i, item, seed) for i, item, seed in triples)
        return self._run(fn, jobs, timeout, retries)

    def _run(self, fn: JobFn, jobs: Iterator[PendingJob], timeout: float | None,
             retries: int) -> Iterator[JobRecord]:
        """Workers start on first iteration (an unused map leaves no processes behind)."""
        yield from self._get_pool().drive(fn, jobs, timeout, self.kill_grace, retries)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool = None


class _Pool:
    """Workers kept busy with jobs; dead or killed workers are replaced."""

    def __init__(self, ctx: Any, workers: int, threads: int) -> None:
        self.new = lambda: _Worker(ctx, threads)
        self.workers = [self.new() for _ in range(workers)]
        self.version = 0

    def drive(self, fn: JobFn, jobs: Iterator[PendingJob], timeout: float | None, grace: float,
              retries: int) -> Iterator[JobRecord]:
        self.version += 1
        again: deque[PendingJob] = deque()
        limit = None if timeout is None else timeout + grace
        try:
            while self._fill(fn, jobs, again, timeout):
                busy = [w for w in self.workers if w.job is not None]
                wait([w.conn for w in busy] + [w.proc.sentinel for w in busy],
                     _wait_for(busy, limit))
                for k, w in enumerate(self.workers):
                    if w.job is None:
                        continue
                    record, replace = _check(w, limit, retries, again)
                    if replace:
                        self.workers[k] = self.new()
                    if record is not None:
                        yield record
        finally:  # a map left early: workers still busy with its jobs are replaced
            for k, w in enumerate(self.workers):
                if w.job is not None:
                    w.kill()
                    self.workers[k] = self.new()

    def _fill(self, fn: JobFn, jobs: Iterator[PendingJob], again: deque[PendingJob],
              timeout: float | None) -> bool:
        """Give every idle worker a job; False when nothing is left running."""
        for k, w in enumerate(self.workers):
            if w.job is None:
                job = again.popleft() if again else next(jobs, None)
                if job is None:
                    break
                try:
                    w.assign(job, fn, self.version, timeout)
                except OSError:  # the worker died while idle: replace it
                    w.kill()
                    job.attempts -= 1
                    self.workers[k] = self.new()
                    self.workers[k].assign(job, fn, self.version, timeout)
        return any(w.job is not None for w in self.workers)

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        self.workers = []


def _wait_for(busy: list[_Worker], limit: float | None) -> float | None:
    running = [w for w in busy if w.running]
    if limit is None or not running:
        return None if limit is None else 1.0  # re-check soon once jobs report their start
    now = time.perf_counter()
    return max(0.0, min(w.started + limit - now for w in running))


def _check(w: _Worker, limit: float | None, retries: int,
           again: deque[PendingJob]) -> tuple[JobRecord | None, bool]:
    """(record or None, whether ``w`` must be replaced) for a busy worker.

    ``limit``: seconds after its start at which the driver kills a job that did not stop."""
    job = w.job
    assert job is not None
    try:
        while w.conn.poll():
            msg = w.conn.recv()
            if msg[0] == "start":
                w.running, w.started = True, time.perf_counter()
                continue
            out = msg[2]
            w.job, w.running = None, False
            return JobRecord(job.index, out.status, out.result, out.error, out.time,
                             job.attempts), False
    except (EOFError, OSError):
        pass  # the pipe broke: the worker is gone
    else:
        if w.proc.is_alive():
            elapsed = time.perf_counter() - w.started
            if limit is not None and w.running and elapsed >= limit:
                w.kill()
                return JobRecord(job.index, "timeout", None,
                                 f"job did not stop at its timeout; killed after {elapsed:.1f} s",
                                 elapsed, job.attempts), True
            return None, False
    w.kill()
    elapsed = time.perf_counter() - w.started if w.running else 0.0
    if job.attempts <= retries:
        again.append(job)
        return None, True
    return died_record(job.index, job.attempts, f"worker exited with code {w.proc.exitcode}",
                       elapsed), True


def _positive(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InputError(f"{name} must be an integer >= 1, got {v!r}")
    return v
