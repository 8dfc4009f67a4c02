"""Executors for per-input jobs (certification, Lipschitz bounds, audits over data sets).

``Executor.map(fn, items, seed=S, timeout=..., retries=...)`` runs ``fn(items[i],
derive_seed(S, i))`` for every input and streams :class:`JobRecord` s (status "ok", "timeout"
or "error") as jobs finish. Seeds depend only on (S, i), so every backend gives the same
records. Backends: ``LocalExecutor`` (in-process, the default), ``ProcessExecutor`` (local
process pool) and ``RayExecutor`` (``pip install lipbound[ray]``; tasks or an actor pool,
fractional GPUs). ``make_executor`` / ``add_backend_args`` pick one by name or by CLI flags.
This package holds the execution backends only; the jobs (bounds, smoothing, audits) live in
:mod:`lipbound.jobs`.
"""

from lipbound.executor.base import (
    DEFAULT_RETRIES,
    Executor,
    JobRecord,
    derive_seed,
    in_order,
)
from lipbound.executor.local import LocalExecutor
from lipbound.executor.options import (
    BACKENDS,
    add_backend_args,
    executor_from_args,
    make_executor,
    map_options,
)
from lipbound.executor.process import ProcessExecutor
from lipbound.executor.stream import run_all

__all__ = [
    "BACKENDS",
    "DEFAULT_RETRIES",
    "Executor",
    "JobRecord",
    "LocalExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "add_backend_args",
    "derive_seed",
    "executor_from_args",
    "in_order",
    "make_executor",
    "map_options",
    "run_all",
]


def __getattr__(name: str):
    if name == "RayExecutor":  # Ray is an optional extra
        # deferred: heavy optional dependency (ray)
        from lipbound.executor.ray_backend import RayExecutor

        return RayExecutor
    raise AttributeError(f"module 'lipbound.executor' has no attribute {name!r}")
