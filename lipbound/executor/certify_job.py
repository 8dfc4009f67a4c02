"""The per-input job of ``lipbound certify``: ``certify_one`` on one row of a data set.

The seed of each row comes from ``(base seed, row number)`` inside ``certify_one``
(``lipbound.smoothing.dataset.input_seed``), exactly as in the in-process loop, so every
backend and every sub-range of rows gives the same records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lipbound.smoothing import Smooth


@dataclass
class CertifyJob:
    """``job((x, label, row), seed) -> record`` of ``certify_one`` (the executor's seed is
    not used: the row number fixes the noise, see the module docstring)."""

    smooth: Smooth
    n0: int
    n: int
    alpha: float
    batch_size: int
    certificate: str
    base_seed: int
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, item: Any, seed: int) -> dict[str, Any]:
        from lipbound.smoothing.dataset import certify_one

        x, label, row = item
        return certify_one(self.smooth, x, label, row, n0=self.n0, n=self.n, alpha=self.alpha,
                           batch_size=self.batch_size, certificate=self.certificate,
                           seed=self.base_seed, **self.options)


def certify_on_executor(smooth: Smooth, inputs: Any, args: Any, options: dict[str, Any],
                        on_record: Any = None, progress: Any = "auto") -> list[dict[str, Any]]:
    """``certify_dataset`` on the executor of the ``--backend`` flags: records in row order;
    ``on_record`` sees each record as its input finishes; inputs that failed or timed out
    are reported together at the end (a lipbound error)."""
    from lipbound.errors import LipboundError
    from lipbound.executor.options import executor_from_args, map_options
    from lipbound.progress import bar

    job = CertifyJob(smooth, args.n0, args.n, args.alpha, args.batch_size, args.certificate,
                     args.seed, options)
    count = inputs.X.shape[0]
    rows = list(inputs.indices) if inputs.indices is not None else list(range(count))
    labels = [None if inputs.y is None else int(inputs.y[i]) for i in range(count)]
    items = [(inputs.X[i], labels[i], rows[i]) for i in range(count)]
    records, failed = [], []
    with executor_from_args(args) as ex:
        for rec in bar(ex.map(job, items, seed=args.seed, **map_options(args)),
                       progress=progress, total=count, desc="certify"):
            if rec.status != "ok":
                failed.append(f"input {rows[rec.index]}: {rec.status}: {rec.error}")
                continue
            if on_record is not None:
                on_record(rec.result)
            records.append(rec.result)
    if failed:
        raise LipboundError(f"{len(failed)} of {count} inputs failed: " + "; ".join(failed))
    return sorted(records, key=lambda r: rows.index(r["idx"]))
