"""The per-input job of ``lipbound audit robustness``: ``lipbound.audit.robustness`` on one row.

Each row's audit is seeded from ``(--seed, source row number)`` (its PGD restarts and its
smoothing noise), so every backend, worker count and sub-range of rows gives the same
records. The job names its model like every job (:mod:`lipbound.jobs.models`): given as a
``ModelSource``, workers load the model once and keep it; the calling process uses its loaded
module.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from lipbound.audit.robustness import RobustnessReport, robustness
from lipbound.errors import LipboundError, ShapeError
from lipbound.executor.options import executor_from_args, map_options
from lipbound.jobs.models import ModelRef, resident_model
from lipbound.progress import bar

#: the audit combines its seed with a row number; seeds below 2**31 keep that in range
AUDIT_SEED_BITS = 31


def audit_seed(seed: int) -> int:
    """The audit's seed from an executor seed (the latter's top bits, < 2**31)."""
    return int(seed) >> (62 - AUDIT_SEED_BITS)


@dataclass
class RobustnessJob:
    """``job((x, label), seed) -> RobustnessReport`` of ``audit.robustness`` on that one input
    (its record's ``index`` is 0; the driver puts the row's position back). The certified
    radii carry the guarantees stated in ``lipbound.audit.robustness``."""

    model: ModelRef
    options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"

    def __call__(self, item: Any, seed: int) -> Any:
        x, label = item
        return robustness(resident_model(self.model, self.device),
                          torch.as_tensor(x).unsqueeze(0), torch.tensor([int(label)]),
                          seed=audit_seed(seed), progress=False, **self.options)


def robustness_on_executor(model: ModelRef, inputs: Any, args: argparse.Namespace, *,
                           on_record: Callable[[Any], Any] | None = None,
                           progress: Any = "auto", **options: Any) -> Any:
    """``audit.robustness`` over every row of ``inputs`` on the executor of the ``--backend``
    flags: a ``RobustnessReport`` with one record per row, in row order (``index`` = position
    in ``inputs.X``). ``options``: keyword arguments of ``audit.robustness`` (not ``seed``:
    rows are seeded from ``args.seed`` and their row numbers). ``on_record`` gets a one-row
    report (its record's ``index`` is the row's position) as each row finishes. Rows that
    failed or timed out are reported together at the end (a lipbound error). ``model``:
    see :class:`RobustnessJob` (the CLI passes a ``ModelSource`` holding its loaded module)."""
    count = inputs.X.shape[0]
    if inputs.y is None or count == 0:
        raise ShapeError("the robustness audit needs at least one labelled input")
    job = RobustnessJob(model, options, device="cpu")
    rows = list(inputs.indices) if inputs.indices is not None else list(range(count))
    items = [(inputs.X[i], int(inputs.y[i])) for i in range(count)]
    start, reports, failed = time.perf_counter(), {}, []
    with executor_from_args(args) as ex:
        runs = ex.map(job, items, seed=args.seed, keys=rows, **map_options(args))
        for rec in bar(runs, progress=progress, total=count, desc="robustness", unit="input"):
            if rec.status != "ok":
                failed.append((rows[rec.index], f"{rec.status}: {rec.error}"))
                continue
            reports[rec.index] = _at_position(rec.result, rec.index)
            if on_record is not None:
                on_record(reports[rec.index])
    if failed:
        raise _failures(failed, count)
    first = reports[0]
    return RobustnessReport([reports[i].records[0] for i in range(count)], first.methods,
                            first.norm, first.eps_max, first.radii, int(args.seed),
                            time.perf_counter() - start)


def _at_position(report: Any, index: int) -> Any:
    """A one-row report whose record has index ``index``."""
    return dataclasses.replace(report, records=[dataclasses.replace(report.records[0],
                                                                    index=index)])


def _failures(failed: list[tuple[int, str]], count: int) -> LipboundError:
    """One error for the failed rows (a setting that fails every row is named once)."""
    whys = {why for _, why in failed}
    if len(failed) == count and len(whys) == 1:
        return LipboundError(f"all {count} inputs failed: {whys.pop()}")
    return LipboundError(f"{len(failed)} of {count} inputs failed: "
                         + "; ".join(f"input {row}: {why}" for row, why in sorted(failed)))
