"""Ray backend on a local Ray instance with 2 CPUs (started once for the module, shut down at
its end): same records as the local run for the same seeds, a killed worker's job is retried,
a job past its timeout gives a timeout record rather than a hang; actor pools; workers run at
the driver's priority (Ray's default of +15 nice levels starved them on a busy machine, which
once stalled the actor start-up for over 10 minutes).

Each fresh Ray worker imports torch and lipbound (a few CPU seconds); the tests keep the
number of worker deaths small so that the module runs in about a minute."""

from __future__ import annotations

import os
import time

import pytest
import torch

from lipbound.executor import LocalExecutor, in_order
from lipbound.jobs import BoundJob
from tests.executor.test_executor_local import (
    SMOOTH_JOB,
    always_crash_job,
    comparable,
    crash_once_job,
    draw_job,
    robustness_cli_records,
    sleepy_job,
    smoothing_items,
    tiny_mlp,
)

ray = pytest.importorskip("ray")


def nice_job(item, seed):
    """The worker's nice level and process id."""
    return {"nice": os.nice(0), "pid": os.getpid()}


@pytest.fixture(scope="module")
def ray_tasks():
    from lipbound.executor import RayExecutor

    assert not ray.is_initialized()
    ex = RayExecutor(num_cpus=2, kill_grace=3.0)
    yield ex
    ex.close()
    assert not ray.is_initialized()


def lipschitz_case():
    job = BoundJob(tiny_mlp(), eps=0.1, spec="margin", output_bounds=True, device="cpu")
    gen = torch.Generator().manual_seed(1)
    return job, [(torch.randn(4, generator=gen), k % 3) for k in range(3)]


def test_ray_workers_run_at_the_drivers_priority(ray_tasks):
    recs = list(ray_tasks.map(nice_job, [0, 1], seed=0))
    assert [r.result["nice"] for r in recs] == [os.nice(0)] * 2


def test_ray_gives_exactly_the_records_of_the_local_run(ray_tasks):
    assert ray_tasks.slots() == 2
    cases = [(draw_job, list(range(6))), (SMOOTH_JOB, smoothing_items(4)), lipschitz_case()]
    for fn, items in cases:
        distributed = comparable(ray_tasks.map(fn, items, seed=21))
        assert all(r["status"] == "ok" for r in distributed), distributed
        assert distributed == comparable(LocalExecutor().map(fn, items, seed=21))


def test_cli_audit_robustness_on_ray_gives_the_local_records(ray_tasks, tmp_path):
    local = robustness_cli_records(tmp_path, "local")
    # --backend ray joins the instance this process runs, and leaves it running
    assert robustness_cli_records(tmp_path, "ray", "--backend", "ray") == local
    assert ray.is_initialized()


def test_ray_timeout_gives_a_timeout_record_not_a_hang(ray_tasks):
    # the driver's kill deadline counts from submission, worker start-up included: make sure
    # both workers are up (they are, unless a worker died before) so that 3 s of grace suffice
    assert [r.status for r in ray_tasks.map(sleepy_job, [0.5, 0.5], seed=0)] == ["ok", "ok"]
    t0 = time.perf_counter()
    recs = in_order(ray_tasks.map(sleepy_job, [0.01, 60, "deaf", 0.01], seed=0, timeout=1.0))
    assert time.perf_counter() - t0 < 40
    assert [r.status for r in recs] == ["ok", "timeout", "timeout", "ok"]
    assert "cancelled" in recs[2].error  # the deaf job was cancelled by force


def test_ray_retries_a_killed_worker(ray_tasks, tmp_path):
    # one crash only (input 1 was seen before): each new worker spends seconds importing torch
    (tmp_path / "seen-1").touch()
    recs = in_order(ray_tasks.map(crash_once_job, [(str(tmp_path), k) for k in range(2)],
                                  seed=0))
    assert [(r.status, r.result, r.attempts) for r in recs] == [("ok", 0, 2), ("ok", 1, 1)]
    recs = list(ray_tasks.map(always_crash_job, [0], seed=0, retries=1))
    assert recs[0].status == "error" and recs[0].attempts == 2
    assert "WorkerDied" in recs[0].error


def test_ray_actor_pool_behaves_the_same(ray_tasks, tmp_path):
    from lipbound import InputError
    from lipbound.executor import RayExecutor

    with RayExecutor(mode="actors", kill_grace=3.0) as actors:  # joins the running instance
        pids = {r.result["pid"] for r in actors.map(nice_job, [0, 1], seed=0)}
        items = smoothing_items(4)
        assert comparable(actors.map(SMOOTH_JOB, items, seed=5)) == \
            comparable(LocalExecutor().map(SMOOTH_JOB, items, seed=5))
        # the pool outlives a run: the same two actors serve the next one
        again = list(actors.map(nice_job, [0, 1], seed=0))
        assert {r.result["pid"] for r in again} == pids
        assert all(r.result["nice"] == os.nice(0) for r in again)
        recs = in_order(actors.map(crash_once_job, [(str(tmp_path), 0)], seed=0))
        assert (recs[0].status, recs[0].attempts) == ("ok", 2)
        recs = in_order(actors.map(sleepy_job, [60, "deaf"], seed=0, timeout=1.0))
        assert [r.status for r in recs] == ["timeout", "timeout"]
        assert "cancelled" in recs[1].error
    with pytest.raises(InputError, match="cannot fit"):
        RayExecutor(mode="actors", num_cpus_per_job=3).slots()
