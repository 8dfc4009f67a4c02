"""Ray backend (``pip install lipbound[ray]``): jobs as Ray tasks or on an actor pool.

* ``mode="tasks"``: one Ray task per job; the job function is put in the object store once.
  A registry-named model is loaded once per Ray worker process (they are reused) and stays
  resident there.
* ``mode="actors"``: one actor per slot holds the job function (and its model, e.g. on a GPU
  share given by ``num_gpus_per_job``) for the whole run.

At most one job per slot is in flight (slots = cluster CPUs / ``num_cpus_per_job``, and GPUs /
``num_gpus_per_job`` when jobs take GPUs), so a submitted job starts promptly and records
stream back as jobs finish. Timeouts: the worker interrupts its job after ``timeout`` seconds
(SIGALRM, "timeout" record); a job still running ``kill_grace`` seconds later (stuck in native
code, or its worker still starting) is cancelled by force (its worker process is killed; an
actor is replaced) and also gives a "timeout" record. A job whose worker died (crash, OOM kill,
lost node) is resubmitted up to ``retries`` times.
"""

from __future__ import annotations

import functools
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from lipbound.errors import InputError
from lipbound.executor.base import (
    Executor,
    JobFn,
    JobRecord,
    PendingJob,
    died_record,
    run_job,
)

try:
    import ray
except ImportError:  # the optional extra is not installed
    ray = None

MODES = ("tasks", "actors")


def _system_errors() -> tuple[type[BaseException], ...]:
    """Ray errors meaning the worker (not the job) failed: the job may be resubmitted."""
    e = ray.exceptions
    names = ("WorkerCrashedError", "RayActorError", "NodeDiedError", "ObjectLostError",
             "OwnerDiedError", "LocalRayletDiedError", "OutOfMemoryError")
    return tuple(getattr(e, n) for n in names if hasattr(e, n))


@functools.cache
def _remote_job() -> Any:
    return ray.remote(run_job)


class _JobActor:
    """Holds the job function (and whatever model it keeps resident) for a whole run."""

    def __init__(self, fn: JobFn) -> None:
        self.fn = fn

    def run(self, item: Any, seed: int, timeout: float | None) -> Any:
        return run_job(self.fn, item, seed, timeout)

    def ready(self) -> bool:
        return True


@functools.cache
def _remote_actor() -> Any:
    return ray.remote(_JobActor)


@dataclass
class _Job(PendingJob):
    started: float = 0.0
    actor: Any = None


class RayExecutor(Executor):
    """Runs jobs on a Ray cluster: ``address`` (e.g. "auto" or "ray://host:10001") joins an
    existing one; ``None`` joins the running instance of this process or starts a local one
    with ``num_cpus`` CPUs (no dashboard), which :meth:`close` shuts down again."""

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 num_cpus_per_job: float = 1.0, num_gpus_per_job: float = 0.0,
                 mode: str = "tasks", kill_grace: float = 30.0,
                 max_in_flight: int | None = None) -> None:
        if ray is None:
            raise InputError("the ray backend needs Ray: pip install 'lipbound[ray]'")
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        for name, v in (("num_cpus_per_job", num_cpus_per_job),
                        ("num_gpus_per_job", num_gpus_per_job), ("kill_grace", kill_grace)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"{name} must be a number >= 0, got {v!r}")
        if num_cpus_per_job == 0 and num_gpus_per_job == 0:
            raise InputError("a job must take some CPU or GPU (num_cpus_per_job > 0 or "
                             "num_gpus_per_job > 0)")
        self.mode, self.kill_grace = mode, float(kill_grace)
        self.cpus, self.gpus = float(num_cpus_per_job), float(num_gpus_per_job)
        self.max_in_flight = max_in_flight
        self._started = False
        if not ray.is_initialized():
            if address is None:
                ray.init(num_cpus=num_cpus, include_dashboard=False)
            else:
                ray.init(address=address)
            self._started = True

    def slots(self) -> int:
        """Jobs that can run at once on the cluster's resources."""
        res = ray.cluster_resources()
        n = math.inf
        if self.cpus > 0:
            n = min(n, math.floor(res.get("CPU", 0) / self.cpus + 1e-9))
        if self.gpus > 0:
            n = min(n, math.floor(res.get("GPU", 0) / self.gpus + 1e-9))
        if n < 1:
            raise InputError(f"the Ray cluster ({res.get('CPU', 0)} CPUs, {res.get('GPU', 0)} "
                             f"GPUs) cannot fit a job needing {self.cpus} CPUs and "
                             f"{self.gpus} GPUs")
        if self.max_in_flight is not None:
            n = min(n, self.max_in_flight)
        return int(n)

    def close(self) -> None:
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False

    def _map(self, fn: JobFn, triples: Iterator[tuple[int, Any, int]],
             timeout: float | None, retries: int) -> Iterator[JobRecord]:
        try:
            fn_ref = ray.put(fn)
        except Exception as exc:
            raise InputError(f"the job function cannot be serialised for Ray: {exc}") from exc
        jobs = (_Job(i, item, seed) for i, item, seed in triples)
        runner_cls = _TaskRunner if self.mode == "tasks" else _ActorRunner
        runner = runner_cls(fn_ref, self.cpus, self.gpus, timeout)
        limit = None if timeout is None else timeout + self.kill_grace
        return _drive(runner, jobs, self.slots(), limit, retries)


class _TaskRunner:
    """Submits each job as a Ray task; a timed-out task is cancelled by force."""

    def __init__(self, fn_ref: Any, cpus: float, gpus: float, timeout: float | None) -> None:
        self.fn_ref, self.timeout = fn_ref, timeout
        self.remote = _remote_job().options(num_cpus=cpus, num_gpus=gpus, max_retries=0,
                                            retry_exceptions=False)

    def warm(self, slots: int) -> None:
        pass

    def submit(self, job: _Job) -> Any:
        return self.remote.remote(self.fn_ref, job.item, job.seed, self.timeout)

    def done(self, job: _Job) -> None:
        pass

    def lost(self, job: _Job, ref: Any) -> None:
        ray.cancel(ref, force=True)

    def shutdown(self, refs: Iterable[Any]) -> None:
        for ref in refs:
            ray.cancel(ref, force=True)


#: seconds to wait for actors to come up before reporting that the cluster cannot host them
ACTOR_START_TIMEOUT = 120.0


class _ActorRunner:
    """One actor per slot keeps the job function resident; a lost actor is replaced."""

    def __init__(self, fn_ref: Any, cpus: float, gpus: float, timeout: float | None) -> None:
        self.fn_ref, self.timeout = fn_ref, timeout
        self.cls = _remote_actor().options(num_cpus=cpus, num_gpus=gpus, max_restarts=0)
        self.idle: list[Any] = []
        self.all: list[Any] = []

    def warm(self, slots: int) -> None:
        self.idle.extend(self._start(slots))

    def submit(self, job: _Job) -> Any:
        if not self.idle:
            self.idle.extend(self._start(1))
        job.actor = self.idle.pop()
        return job.actor.run.remote(job.item, job.seed, self.timeout)

    def _start(self, count: int) -> list[Any]:
        """``count`` new actors, once they are up (start-up never counts against a job)."""
        actors = [self.cls.remote(self.fn_ref) for _ in range(count)]
        self.all.extend(actors)
        try:
            ray.get([a.ready.remote() for a in actors], timeout=ACTOR_START_TIMEOUT)
        except ray.exceptions.RayError as exc:  # GetTimeoutError included
            for a in actors:
                ray.kill(a, no_restart=True)
            raise InputError(
                f"could not start {count} Ray actor(s) within {ACTOR_START_TIMEOUT:.0f} s "
                f"(does the cluster have free resources for them?): {exc}") from exc
        return actors

    def done(self, job: _Job) -> None:
        self.idle.append(job.actor)

    def lost(self, job: _Job, ref: Any) -> None:
        ray.kill(job.actor, no_restart=True)
        self.all.remove(job.actor)

    def shutdown(self, refs: Iterable[Any]) -> None:
        for actor in self.all:
            ray.kill(actor, no_restart=True)
        self.all, self.idle = [], []


def _drive(runner: Any, jobs: Iterator[_Job], slots: int, limit: float | None,
           retries: int) -> Iterator[JobRecord]:
    """Keep ``slots`` jobs in flight; yield records as they finish; enforce ``limit``."""
    inflight: dict[Any, _Job] = {}
    again: deque[_Job] = deque()
    crashed = _system_errors()
    try:
        runner.warm(slots)
        while True:
            while len(inflight) < slots:
                job = again.popleft() if again else next(jobs, None)
                if job is None:
                    break
                job.attempts += 1
                ref = runner.submit(job)
                job.started = time.perf_counter()
                inflight[ref] = job
            if not inflight:
                return
            refs = list(inflight)
            ray.wait(refs, num_returns=1, timeout=_wait_for(inflight.values(), limit))
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                record = _collect(runner, inflight.pop(ref), ref, crashed, retries, again)
                if record is not None:
                    yield record
            yield from _expire(runner, inflight, limit)
    finally:
        runner.shutdown(list(inflight))


def _wait_for(jobs: Iterable[_Job], limit: float | None) -> float | None:
    if limit is None:
        return None
    now = time.perf_counter()
    return max(0.0, min(j.started + limit - now for j in jobs))


def _collect(runner: Any, job: _Job, ref: Any, crashed: tuple, retries: int,
             again: deque[_Job]) -> JobRecord | None:
    """The record of a finished ref, or None when its job was queued again."""
    elapsed = time.perf_counter() - job.started
    try:
        out = ray.get(ref)
    except crashed as exc:
        runner.lost(job, ref)
        if job.attempts <= retries:
            again.append(job)
            return None
        return died_record(job.index, job.attempts, type(exc).__name__, elapsed)
    except ray.exceptions.RayError as exc:
        runner.done(job)
        return JobRecord(job.index, "error", None, f"{type(exc).__name__}: {exc}", elapsed,
                         job.attempts)
    runner.done(job)
    return JobRecord(job.index, out.status, out.result, out.error, out.time, job.attempts)


def _expire(runner: Any, inflight: dict[Any, _Job], limit: float | None) -> Iterator[JobRecord]:
    """Cancel jobs running past ``limit`` seconds; each gives a "timeout" record."""
    if limit is None:
        return
    now = time.perf_counter()
    for ref, job in list(inflight.items()):
        if now - job.started >= limit:
            del inflight[ref]
            runner.lost(job, ref)
            yield JobRecord(job.index, "timeout", None,
                            f"job did not stop at its timeout; cancelled after "
                            f"{now - job.started:.1f} s", now - job.started, job.attempts)
