"""Ray backend (``pip install lipbound[ray]``): jobs as Ray tasks or on an actor pool.

* ``mode="tasks"``: one Ray task per job; the job function is put in the object store once.
  A registry-named model is loaded once per Ray worker process (they are reused) and stays
  resident there.
* ``mode="actors"``: one actor per slot holds the job function (and its model, e.g. on a GPU
  share given by ``num_gpus_per_job``) for the whole run; the actors stay up for the next run
  of the same executor until :meth:`RayExecutor.close` (use the executor as a context manager).

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
    """Runs jobs, keeping the job function of the current run (and the model it holds)
    resident; the actor outlives runs, so a new run only swaps the function."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.fn: JobFn | None = None

    def run(self, fn_box: tuple[Any], item: Any, seed: int, timeout: float | None) -> Any:
        ref = fn_box[0]  # boxed, so that Ray passes the reference and not the object
        if ref.hex() != self.key:
            self.fn, self.key = ray.get(ref), ref.hex()
        return run_job(self.fn, item, seed, timeout)

    def ready(self) -> bool:
        return True


@functools.cache
def _remote_actor() -> Any:
    return ray.remote(_JobActor)


#: seconds to wait for actors to come up before reporting that the cluster cannot host them
ACTOR_START_TIMEOUT = 120.0

#: Ray's own default lowers every worker's priority by 15 nice levels below the process that
#: started the instance; workers of a local instance keep that process's priority instead.
WORKER_NICENESS = 0


def start_local_instance(num_cpus: int | None) -> None:
    """Start a local Ray instance with ``num_cpus`` CPUs (default: all), no dashboard, whose
    workers run at the priority of this process.

    Ray's default worker niceness (+15) starves its workers whenever anything else of the
    same user session keeps a core busy (Linux groups a session's processes for scheduling,
    so nice levels compete inside that group): importing torch in a fresh worker then took
    minutes instead of seconds, which showed as actors that never came up. (A cluster
    started with ``ray start`` keeps Ray's default unless started with
    ``RAY_worker_niceness=0`` in its environment.)
    """
    ray.init(num_cpus=num_cpus, include_dashboard=False,
             _system_config={"worker_niceness": WORKER_NICENESS})


@dataclass
class _Job(PendingJob):
    started: float = 0.0
    actor: Any = None


class RayExecutor(Executor):
    """Runs jobs on a Ray cluster: ``address`` (e.g. "auto" or "ray://host:10001") joins an
    existing one; ``None`` joins the running instance of this process or starts a local one
    with ``num_cpus`` CPUs (no dashboard, workers at this process's priority), which
    :meth:`close` shuts down again. ``start_timeout``: seconds an actor pool may take to come
    up before the run stops with an error naming the cause."""

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 num_cpus_per_job: float = 1.0, num_gpus_per_job: float = 0.0,
                 mode: str = "tasks", kill_grace: float = 30.0,
                 max_in_flight: int | None = None,
                 start_timeout: float = ACTOR_START_TIMEOUT) -> None:
        if ray is None:
            raise InputError("the ray backend needs Ray: pip install 'lipbound[ray]'")
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        for name, v in (("num_cpus_per_job", num_cpus_per_job),
                        ("num_gpus_per_job", num_gpus_per_job), ("kill_grace", kill_grace),
                        ("start_timeout", start_timeout)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"{name} must be a number >= 0, got {v!r}")
        if start_timeout == 0:
            raise InputError("start_timeout must be > 0 seconds")
        if num_cpus_per_job == 0 and num_gpus_per_job == 0:
            raise InputError("a job must take some CPU or GPU (num_cpus_per_job > 0 or "
                             "num_gpus_per_job > 0)")
        self.mode, self.kill_grace = mode, float(kill_grace)
        self.cpus, self.gpus = float(num_cpus_per_job), float(num_gpus_per_job)
        self.max_in_flight = max_in_flight
        self.start_timeout = float(start_timeout)
        self._actors: list[Any] = []  # idle actors, kept from run to run until close()
        self._started = False
        if not ray.is_initialized():
            if address is None:
                start_local_instance(num_cpus)
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
        """Kill this executor's actors; shut down the Ray instance it started."""
        if ray.is_initialized():
            for actor in self._actors:
                ray.kill(actor, no_restart=True)
        self._actors = []
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
        if self.mode == "tasks":
            runner: Any = _TaskRunner(fn_ref, self.cpus, self.gpus, timeout)
        else:
            runner = _ActorRunner(self._actors, fn_ref, self.cpus, self.gpus, timeout,
                                  self.start_timeout)
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

    def shutdown(self, inflight: dict[Any, _Job]) -> None:
        for ref in inflight:
            ray.cancel(ref, force=True)


class _ActorRunner:
    """Jobs on a pool of actors (``idle``: the executor's idle actors, which outlive the run);
    a lost actor is killed and replaced when a job needs it."""

    def __init__(self, idle: list[Any], fn_ref: Any, cpus: float, gpus: float,
                 timeout: float | None, start_timeout: float) -> None:
        self.idle, self.fn_box = idle, (fn_ref,)
        self.timeout, self.start_timeout = timeout, start_timeout
        self.cls = _remote_actor().options(num_cpus=cpus, num_gpus=gpus, max_restarts=0)

    def warm(self, slots: int) -> None:
        if len(self.idle) < slots:
            self.idle.extend(self._start(slots - len(self.idle)))

    def submit(self, job: _Job) -> Any:
        if not self.idle:
            self.idle.extend(self._start(1))
        job.actor = self.idle.pop()
        return job.actor.run.remote(self.fn_box, job.item, job.seed, self.timeout)

    def _start(self, count: int) -> list[Any]:
        """``count`` new actors, once they are up (start-up never counts against a job)."""
        actors = [self.cls.remote() for _ in range(count)]
        try:
            ray.get([a.ready.remote() for a in actors], timeout=self.start_timeout)
        except ray.exceptions.RayError as exc:  # GetTimeoutError included
            for a in actors:
                ray.kill(a, no_restart=True)
            why = ("does the cluster have free resources for them?"
                   if isinstance(exc, ray.exceptions.GetTimeoutError) else "they failed")
            raise InputError(f"could not start {count} Ray actor(s) within "
                             f"{self.start_timeout:g} s ({why}): {exc}") from exc
        return actors

    def done(self, job: _Job) -> None:
        self.idle.append(job.actor)

    def lost(self, job: _Job, ref: Any) -> None:
        ray.kill(job.actor, no_restart=True)

    def shutdown(self, inflight: dict[Any, _Job]) -> None:
        """Kill the actors still busy with jobs of an abandoned run."""
        for job in inflight.values():
            ray.kill(job.actor, no_restart=True)


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
        runner.shutdown(inflight)


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
