"""Ray backend on a local Ray instance with 2 CPUs (started once for the module, shut down at
its end): same records as the local run for the same seeds, a killed worker's job is retried,
a job past its timeout gives a timeout record rather than a hang.

Marked slow (run with ``python -m pytest -m slow tests/test_executor_ray.py``): they pass on
their own in about 75 s, but in a full-suite run beside other load the actor-pool test once
waited on Ray's actor start-up for over 10 minutes, which would hang CI."""

from __future__ import annotations

import time

import pytest
import torch

from lipbound.executor import LipschitzJob, LocalExecutor, in_order
from tests.test_executor_local import (
    SMOOTH_JOB,
    always_crash_job,
    comparable,
    crash_once_job,
    draw_job,
    sleepy_job,
    smoothing_items,
    tiny_mlp,
)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_tasks():
    from lipbound.executor import RayExecutor

    assert not ray.is_initialized()
    ex = RayExecutor(num_cpus=2, kill_grace=3.0)
    yield ex
    ex.close()
    assert not ray.is_initialized()


def lipschitz_case():
    job = LipschitzJob(tiny_mlp(), eps=0.1, spec="margin", num_classes=3, output_bounds=True,
                       device="cpu")
    gen = torch.Generator().manual_seed(1)
    return job, [(torch.randn(4, generator=gen), k % 3) for k in range(3)]


def test_ray_gives_exactly_the_records_of_the_local_run(ray_tasks):
    assert ray_tasks.slots() == 2
    cases = [(draw_job, list(range(6))), (SMOOTH_JOB, smoothing_items(4)), lipschitz_case()]
    for fn, items in cases:
        distributed = comparable(ray_tasks.map(fn, items, seed=21))
        assert all(r["status"] == "ok" for r in distributed), distributed
        assert distributed == comparable(LocalExecutor().map(fn, items, seed=21))


def test_ray_retries_a_killed_worker(ray_tasks, tmp_path):
    recs = in_order(ray_tasks.map(crash_once_job, [(str(tmp_path), k) for k in range(2)],
                                  seed=0))
    assert [(r.status, r.result, r.attempts) for r in recs] == [("ok", 0, 2), ("ok", 1, 2)]
    recs = list(ray_tasks.map(always_crash_job, [0], seed=0, retries=1))
    assert recs[0].status == "error" and recs[0].attempts == 2
    assert "WorkerDied" in recs[0].error


def test_ray_timeout_gives_a_timeout_record_not_a_hang(ray_tasks):
    # the driver's kill deadline counts from submission, worker start-up included: warm up
    # both workers first so that a 3 s grace is enough on a busy machine
    assert [r.status for r in ray_tasks.map(sleepy_job, [0.5, 0.5], seed=0)] == ["ok", "ok"]
    t0 = time.perf_counter()
    recs = in_order(ray_tasks.map(sleepy_job, [0.01, 60, "deaf", 0.01], seed=0, timeout=1.0))
    assert time.perf_counter() - t0 < 40
    assert [r.status for r in recs] == ["ok", "timeout", "timeout", "ok"]
    assert "cancelled" in recs[2].error  # the deaf job was cancelled by force


def test_ray_actor_pool_behaves_the_same(ray_tasks, tmp_path):
    from lipbound.executor import RayExecutor

    actors = RayExecutor(mode="actors", kill_grace=3.0)  # joins the running instance
    items = smoothing_items(4)
    assert comparable(actors.map(SMOOTH_JOB, items, seed=5)) == \
        comparable(LocalExecutor().map(SMOOTH_JOB, items, seed=5))
    recs = in_order(actors.map(crash_once_job, [(str(tmp_path), 0)], seed=0))
    assert (recs[0].status, recs[0].attempts) == ("ok", 2)
    recs = in_order(actors.map(sleepy_job, [60, "deaf"], seed=0, timeout=1.0))
    assert [r.status for r in recs] == ["timeout", "timeout"]
