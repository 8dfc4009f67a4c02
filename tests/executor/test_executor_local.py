"""Executors without Ray: in-process and process pool (seeds, records, retries, timeouts),
the backend flags and the JSON Lines writer. Job functions live at module level so that worker
processes can import them; ``tests/executor/test_executor_ray.py`` reuses them."""

from __future__ import annotations

import argparse
import os
import signal
import time

import numpy as np
import pytest
import torch

import lipbound
from lipbound.executor import (
    LocalExecutor,
    ProcessExecutor,
    add_backend_args,
    derive_seed,
    executor_from_args,
    in_order,
    make_executor,
    map_options,
    run_all,
)
from lipbound.jobs import BoundJob, CertifyJob
from lipbound.report.jsonl import JsonlWriter, read_jsonl
from lipbound.specs import margin_spec

# ---------------------------------------------------------------- job functions (module level)


def draw_job(item, seed):
    """Depends on its seed only through a numpy generator: equal seeds, equal results."""
    return {"item": item, "seed": seed, "u": float(np.random.default_rng(seed).random())}


def crash_once_job(item, seed):
    """Kills its own process the first time it sees ``item`` (marker file in a folder)."""
    folder, value = item
    marker = os.path.join(folder, f"seen-{value}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return value


def always_crash_job(item, seed):
    os._exit(4)


def sleepy_job(item, seed):
    """Sleeps ``item`` seconds; "deaf" blocks SIGALRM first (only a kill stops it)."""
    if item == "deaf":
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
        item = 3600
    time.sleep(item)
    return item


def failing_job(item, seed):
    if item < 0:
        raise lipbound.InputError(f"negative item {item}")
    return item


def tiny_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


def without_times(obj):
    """A record's content minus wall-clock fields (the only part allowed to differ)."""
    if isinstance(obj, dict):
        return {k: without_times(v) for k, v in obj.items() if k != "time"}
    if isinstance(obj, list):
        return [without_times(v) for v in obj]
    return obj


def comparable(records):
    return [without_times(r.to_dict()) for r in in_order(records)]


def smoothing_items(count=4):
    from lipbound.models.digits_smooth import digits_images

    _, _, X, y = digits_images()
    return [(X[i], int(y[i])) for i in range(count)]


SMOOTH_JOB = CertifyJob("digits-smooth-0.25", 0.25, n0=50, n=400, batch_size=128)


# ---------------------------------------------------------------- seeds


def test_derive_seed_is_a_pure_function_of_base_and_index():
    seeds = [derive_seed(7, i) for i in range(200)]
    assert seeds == [derive_seed(7, i) for i in range(200)]
    assert len(set(seeds)) == 200
    assert all(0 <= s < 2**62 for s in seeds)
    assert derive_seed(8, 0) != derive_seed(7, 0)


def test_local_records_use_derived_seeds_in_input_order():
    recs = list(LocalExecutor().map(draw_job, ["a", "b", "c"], seed=5))
    assert [r.index for r in recs] == [0, 1, 2]
    for i, r in enumerate(recs):
        assert r.status == "ok" and r.attempts == 1 and r.error is None
        assert r.result["item"] == "abc"[i]
        assert r.result["seed"] == derive_seed(5, i)


def test_job_errors_become_records_and_the_run_goes_on():
    recs = list(LocalExecutor().map(failing_job, [1, -2, 3], seed=0))
    assert [r.status for r in recs] == ["ok", "error", "ok"]
    assert "InputError: negative item -2" in recs[1].error
    assert recs[2].result == 3


def test_local_timeout_gives_a_timeout_record():
    t0 = time.perf_counter()
    recs = list(LocalExecutor().map(sleepy_job, [0.01, 60, 0.01], seed=0, timeout=0.5))
    assert time.perf_counter() - t0 < 10
    assert [r.status for r in recs] == ["ok", "timeout", "ok"]
    assert "timeout" in recs[1].error


@pytest.mark.parametrize("kwargs, match", [
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"seed": 0, "timeout": 0}, "timeout"),
    ({"seed": 0, "retries": -1}, "retries"),
])
def test_bad_map_arguments(kwargs, match):
    with pytest.raises(lipbound.InputError, match=match):
        LocalExecutor().map(draw_job, [1], **kwargs)


def test_process_backend_needs_a_picklable_function():
    with pytest.raises(lipbound.InputError, match="picklable"):
        ProcessExecutor(workers=1).map(lambda item, seed: item, [1], seed=0)


# ---------------------------------------------------------------- process pool


@pytest.fixture(scope="module")
def pool():
    """Two workers (default start method), kept up across the maps of this module."""
    with ProcessExecutor(workers=2, kill_grace=1.0) as ex:
        yield ex


def test_process_pool_gives_the_records_of_the_local_run(pool):
    items = list(range(7))
    assert comparable(pool.map(draw_job, items, seed=11)) == \
        comparable(LocalExecutor().map(draw_job, items, seed=11))
    items = smoothing_items()
    assert comparable(pool.map(SMOOTH_JOB, items, seed=3)) == \
        comparable(LocalExecutor().map(SMOOTH_JOB, items, seed=3))


def test_process_pool_retries_a_killed_worker(pool, tmp_path):
    recs = in_order(pool.map(crash_once_job, [(str(tmp_path), k) for k in range(3)], seed=0))
    assert [(r.status, r.result, r.attempts) for r in recs] == [("ok", k, 2) for k in range(3)]
    recs = list(pool.map(always_crash_job, [0], seed=0, retries=1))
    assert recs[0].status == "error" and recs[0].attempts == 2
    assert "WorkerDied" in recs[0].error


def test_process_pool_timeouts_never_hang(pool):
    t0 = time.perf_counter()
    recs = in_order(pool.map(sleepy_job, [0.01, 60, "deaf", 0.01], seed=0, timeout=0.5))
    assert time.perf_counter() - t0 < 30
    assert [r.status for r in recs] == ["ok", "timeout", "timeout", "ok"]
    assert "killed" in recs[2].error  # the deaf job was stopped by killing its worker


# ---------------------------------------------------------------- jobs


def test_lipschitz_job_matches_the_api():
    model, x = tiny_mlp(), torch.tensor([0.1, -0.2, 0.3, 0.0])
    job = BoundJob(model, eps=0.1, spec="margin", output_bounds=True, device="cpu")
    rec = next(iter(LocalExecutor().map(job, [(x, 1)], seed=2)))
    assert rec.status == "ok", rec.error
    direct = lipbound.local_lipschitz(model, x, 0.1, spec=margin_spec(1, 3), seed=derive_seed(2, 0))
    assert rec.result["lipschitz"]["upper"] == direct.upper.tolist()
    lo, up = lipbound.output_bounds(model, x, 0.1, spec=margin_spec(1, 3))
    assert rec.result["lower"] == lo.tolist() and rec.result["upper"] == up.tolist()


def test_lipschitz_job_bab_runs_or_falls_back():
    job = BoundJob(tiny_mlp(), eps=0.05, method="bab", device="cpu", timeout=5)
    rec = next(iter(LocalExecutor().map(job, [torch.zeros(4)], seed=0)))
    assert rec.status == "ok", rec.error
    lip = rec.result["lipschitz"]
    assert lip["value"] >= lip["lower_value"] > 0
    assert lip["method"] == "bab" or "fallback" in rec.result


def test_smoothing_job_record():
    rec = next(iter(LocalExecutor().map(SMOOTH_JOB, smoothing_items(1), seed=1)))
    assert rec.status == "ok", rec.error
    r = rec.result
    assert r["certificate"] == "cohen" and r["details"]["seed"] == derive_seed(1, 0)
    assert r["predict"] == -1 or r["radius"] > 0


# ---------------------------------------------------------------- flags, streaming, JSONL


def test_backend_flags_build_the_executor():
    ap = argparse.ArgumentParser()
    add_backend_args(ap)
    args = ap.parse_args(["--backend", "process", "--num-cpus", "3", "--job-timeout", "2.5"])
    ex = executor_from_args(args)
    assert isinstance(ex, ProcessExecutor) and ex.workers == 3
    assert map_options(args) == {"timeout": 2.5, "retries": 2}
    assert isinstance(executor_from_args(ap.parse_args([])), LocalExecutor)
    with pytest.raises(lipbound.InputError, match="backend"):
        make_executor("spark")
    with pytest.raises(lipbound.InputError, match="ray"):
        make_executor("local", address="auto")


def test_run_all_streams_every_record_to_jsonl(tmp_path):
    path = tmp_path / "run.jsonl"
    seen = []
    with JsonlWriter(path) as w:
        def check(rec):  # the record is on disk when the next one arrives
            seen.append(len(read_jsonl(path)))
        recs = run_all(LocalExecutor(), failing_job, [3, -1, 2], seed=0, writer=w,
                       on_record=check, progress=False)
    assert seen == [1, 2, 3]
    lines = read_jsonl(path)
    assert [(d["index"], d["status"]) for d in lines] == [(0, "ok"), (1, "error"), (2, "ok")]
    assert [r.index for r in recs] == [0, 1, 2]


def test_jsonl_reader_skips_only_a_truncated_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    with JsonlWriter(path) as w:
        w.write({"x": float("inf"), "t": torch.tensor([1.5])})
    path.write_text(path.read_text() + '{"x": 1')
    assert read_jsonl(path) == [{"x": "inf", "t": [1.5]}]
    path.write_text('{"x": 1\n{"x": 2}\n')
    with pytest.raises(lipbound.InputError, match="line 1"):
        read_jsonl(path)


def test_jsonl_writer_errors_and_cleanup(tmp_path):
    with pytest.raises(lipbound.InputError, match="cannot write"):
        JsonlWriter(tmp_path / "missing-dir" / "r.jsonl")
    path = tmp_path / "r.jsonl"
    with pytest.raises(RuntimeError), JsonlWriter(path):
        raise RuntimeError("stop")
    assert not path.exists()
    with JsonlWriter(path) as w, pytest.raises(lipbound.InputError, match="mapping"):
        w.write([1, 2])


def test_keys_give_rows_the_seeds_of_the_full_run():
    full = in_order(LocalExecutor().map(draw_job, list("abcdef"), seed=4))
    part = in_order(LocalExecutor().map(draw_job, ["c", "e"], seed=4, keys=[2, 4]))
    assert [r.index for r in part] == [0, 1]
    assert [r.result for r in part] == [full[2].result, full[4].result]
    with pytest.raises(lipbound.InputError, match="distinct"):
        LocalExecutor().map(draw_job, ["a", "b"], seed=0, keys=[1, 1])


def _bound_records(tmp_path, name, *backend):
    from lipbound.cli import main

    out = tmp_path / f"{name}.jsonl"
    code = main(["bound", "--model", "digits-mlp", "--index", "3:6", "--eps", "0.01",
                 "--spec", "margin", "--progress", "off", "-o", str(out), *backend])
    assert code == 0
    return sorted((without_times(r) for r in read_jsonl(out)),
                  key=lambda r: (r["input"]["index"], r["kind"]))


@pytest.mark.slow
def test_cli_bound_gives_the_same_records_on_the_process_backend(tmp_path):
    local = _bound_records(tmp_path, "local")
    assert [r["input"]["index"] for r in local] == [3, 3, 4, 4, 5, 5]
    assert local == _bound_records(tmp_path, "pool", "--backend", "process", "--num-cpus", "2")


@pytest.mark.slow
def test_cli_certify_gives_the_same_records_on_the_process_backend(tmp_path):
    from lipbound.cli import main
    from lipbound.smoothing.records import read_tsv

    def run(name, *backend):
        tsv = tmp_path / f"{name}.tsv"
        assert main(["certify", "--model", "digits-smooth-0.25", "--indices", "7:10",
                     "--n", "500", "--tsv", str(tsv), "--no-progress", *backend]) == 0
        return sorted((r["idx"], r["predict"], r["radius"]) for r in read_tsv(tsv))

    local = run("local")
    assert [r[0] for r in local] == [7, 8, 9]
    assert run("pool", "--backend", "process", "--num-cpus", "2") == local


def robustness_cli_records(tmp_path, name, *extra, index="0:4"):
    """``lipbound audit robustness`` (smoothing radii: seeded per row) on a tiny MLP."""
    from lipbound.cli import main
    from tests.models import mlp

    X = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    y = mlp()(torch.from_numpy(X)).argmax(1).numpy()
    y[3] = (y[3] + 1) % 3  # one misclassified row
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / f"{name}.jsonl"
    code = main(["audit", "robustness", "--model", "tests.models:mlp", "--inputs",
                 str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--index", index,
                 "--norm", "2", "--methods", "smoothing", "--sigma", "0.5", "--no-attack",
                 "--progress", "off", "--output", str(out), *extra])
    assert code == 0
    return sorted((without_times(r) for r in read_jsonl(out)), key=lambda r: r["input"]["index"])


def test_cli_audit_robustness_gives_the_same_records_on_every_backend(tmp_path):
    local = robustness_cli_records(tmp_path, "local")
    assert [r["input"]["index"] for r in local] == [0, 1, 2, 3]
    assert [r["input"]["correct"] for r in local] == [True, True, True, False]
    assert all(r["lower"] > 0 for r in local[:3]) and local[3]["lower"] == 0
    # rows keep the seeds of the full run when run alone
    assert robustness_cli_records(tmp_path, "part", index="2:4") == local[2:]
    pool = robustness_cli_records(tmp_path, "pool", "--backend", "process", "--num-cpus", "2")
    assert pool == local
