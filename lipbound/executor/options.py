"""Choosing an executor: ``make_executor`` and the shared command-line flags.

    ap = argparse.ArgumentParser(); add_backend_args(ap)
    args = ap.parse_args(["--backend", "ray", "--num-cpus", "2"])
    with executor_from_args(args) as ex:
        for rec in ex.map(job, items, seed=0, **map_options(args)): ...
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

from lipbound.errors import InputError
from lipbound.executor.base import DEFAULT_RETRIES, Executor
from lipbound.executor.local import LocalExecutor
from lipbound.executor.process import ProcessExecutor

BACKENDS = ("local", "process", "ray")


def make_executor(backend: str = "local", address: str | None = None, *,
                  num_cpus: int | None = None, num_gpus_per_job: float = 0.0,
                  num_cpus_per_job: float = 1.0, ray_mode: str = "tasks",
                  kill_grace: float | None = None) -> Executor:
    """An executor by name.

    ``local``: in-process, in input order. ``process``: ``num_cpus`` worker processes
    (default: all cores). ``ray``: joins the cluster at ``address`` (or the instance already
    running in this process), else starts a local one with ``num_cpus`` CPUs; jobs take
    ``num_cpus_per_job`` CPUs and ``num_gpus_per_job`` (fractional) GPUs; ``ray_mode`` is
    "tasks" or "actors". ``kill_grace``: seconds past a job's timeout before its worker is
    killed (process and ray backends).
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if address is not None and backend != "ray":
        raise InputError("--address names a Ray cluster; it needs --backend ray")
    if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int)
                                 or num_cpus < 1):
        raise InputError(f"num_cpus must be an integer >= 1, got {num_cpus!r}")
    grace = {} if kill_grace is None else {"kill_grace": kill_grace}
    if backend == "local":
        return LocalExecutor()
    if backend == "process":
        return ProcessExecutor(workers=num_cpus, **grace)
    # deferred: heavy optional dependency (ray)
    from lipbound.executor.ray_backend import RayExecutor

    return RayExecutor(address, num_cpus=num_cpus if address is None else None,
                       num_cpus_per_job=num_cpus_per_job, num_gpus_per_job=num_gpus_per_job,
                       mode=ray_mode, **grace)


def add_backend_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--backend``, ``--address``, ``--num-cpus``, ``--num-gpus-per-job``,
    ``--job-timeout``, ``--job-retries`` and ``--ray-mode`` to a (sub)command's parser."""
    g = parser.add_argument_group("execution (per-input jobs)")
    g.add_argument("--backend", choices=BACKENDS, default="local",
                   help="where per-input jobs run (default: local, in this process)")
    g.add_argument("--address", default=None,
                   help="Ray cluster address (e.g. auto or ray://host:10001); default: start "
                        "a local Ray instance")
    g.add_argument("--num-cpus", type=int, default=None,
                   help="worker processes (process) or CPUs of a local Ray instance")
    g.add_argument("--num-gpus-per-job", type=float, default=0.0,
                   help="GPU share of each Ray job (e.g. 0.25: four jobs per GPU)")
    g.add_argument("--job-timeout", type=float, default=None,
                   help="seconds per input; a job past it gives a 'timeout' record")
    g.add_argument("--job-retries", type=int, default=DEFAULT_RETRIES,
                   help="resubmissions of a job whose worker died (default: %(default)s)")
    g.add_argument("--ray-mode", choices=("tasks", "actors"), default="tasks",
                   help="Ray tasks, or an actor pool keeping the model resident")


def executor_from_args(args: argparse.Namespace) -> Executor:
    """The executor the flags of :func:`add_backend_args` describe (flags a command does not
    have take their defaults: in-process)."""
    opt = functools.partial(getattr, args)
    return make_executor(opt("backend", "local"), opt("address", None),
                         num_cpus=opt("num_cpus", None),
                         num_gpus_per_job=opt("num_gpus_per_job", 0.0),
                         ray_mode=opt("ray_mode", "tasks"))


def map_options(args: argparse.Namespace) -> dict[str, Any]:
    """``timeout`` and ``retries`` for ``Executor.map`` from the flags (or their defaults)."""
    return {"timeout": getattr(args, "job_timeout", None),
            "retries": getattr(args, "job_retries", DEFAULT_RETRIES)}
