"""Run jobs over a data set, streaming each record to a JSON Lines report as it finishes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized
from typing import Any

from lipbound.executor.base import DEFAULT_RETRIES, Executor, JobFn, JobRecord
from lipbound.progress import ProgressFlag, bar


def run_all(executor: Executor, fn: JobFn, items: Iterable[Any], *, seed: int,
            timeout: float | None = None, retries: int = DEFAULT_RETRIES,
            writer: Any = None, on_record: Callable[[JobRecord], Any] | None = None,
            progress: ProgressFlag = "auto", desc: str = "inputs") -> list[JobRecord]:
    """All records in input order; each is passed to ``writer.write`` (e.g. a
    :class:`lipbound.report.jsonl.JsonlWriter`) and ``on_record`` the moment it arrives."""
    total = len(items) if isinstance(items, Sized) else None
    records = []
    with bar(total=total, progress=progress, desc=desc) as pbar:
        for rec in executor.map(fn, items, seed=seed, timeout=timeout, retries=retries):
            if writer is not None:
                writer.write(rec)
            if on_record is not None:
                on_record(rec)
            records.append(rec)
            pbar.update(1)
    return sorted(records, key=lambda r: r.index)
