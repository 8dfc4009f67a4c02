"""The per-input randomized-smoothing job (``Smooth(...).certify`` on one input) for
:meth:`lipbound.executor.Executor.map`, and ``lipbound certify``'s run of it over a data set.

Seeds: by default an input's noise comes from the executor's seed; with ``base_seed`` (what
``lipbound certify`` sets) from ``(base_seed, row)`` exactly as in ``certify_dataset``
(:func:`lipbound.smoothing.dataset.input_seed`), so every backend and every sub-range of rows
gives the records of the in-process loop. With ``shared_noise`` every row uses ``base_seed``
itself and each worker process keeps one ``NoiseBank`` for all the rows it certifies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from lipbound.errors import InputError, LipboundError
from lipbound.executor.options import executor_from_args, map_options
from lipbound.jobs.models import ModelRef, resident_model, split_item
from lipbound.progress import bar
from lipbound.report.records import smoothing_record
from lipbound.smoothing import DualPair, Smooth
from lipbound.smoothing.dataset import certify_one
from lipbound.smoothing.sampling import NoiseBank


@lru_cache(maxsize=1)
def _process_bank(run: tuple) -> NoiseBank:
    """This process's noise bank for the shared-noise rows of one run (``run``: the job's seed
    and sampling settings; a new run replaces it, so at most one bank is held)."""
    return NoiseBank()


@dataclass(frozen=True)
class CertifyJob:
    """``job(item, seed) -> record``: randomized-smoothing certification of one input
    (``Smooth(model, num_classes, sigma, dual=..., input_shape=...).certify``).

    ``item``: ``x``, ``(x, label)`` or ``(x, label, row)``. ``dual``: a ``DualPair``, or the
    (left, right) half-resolution models (split ``dual_split``) for the ``dual`` / ``best``
    certificates. Returns the smoothing record of
    :func:`lipbound.report.records.smoothing_record` (``idx`` is the row, or None): label,
    predict (-1 abstains), radius (l2), correct, certificate, time, details and the report
    schema's keys. The guarantee is Smooth.certify's: with probability >= 1 - alpha over the
    noise drawn from the input's seed, the smoothed classifier predicts the returned class
    within the radius. ``shared_noise`` (needs ``base_seed``): every row's noise is that of
    ``base_seed`` (``certify_dataset(shared_noise=True)``).
    """

    model: ModelRef
    sigma: float
    num_classes: int = 10
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch_size: int = 1000
    certificate: str = "cohen"
    dual: DualPair | tuple[ModelRef, ModelRef] | None = None
    dual_split: str = "checkerboard"
    input_shape: tuple[int, ...] | None = None
    base_seed: int | None = None
    model_name: str | None = None
    device: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    shared_noise: bool = False

    def __post_init__(self) -> None:
        if self.shared_noise and self.base_seed is None:
            raise InputError("CertifyJob with shared_noise needs base_seed")

    def smooth(self) -> Smooth:
        """The smoothed classifier, on this worker's resident models."""
        pair = self.dual
        if pair is not None and not isinstance(pair, DualPair):
            left, right = (resident_model(m, self.device) for m in pair)
            pair = DualPair(left, right, split=self.dual_split)
        return Smooth(resident_model(self.model, self.device), self.num_classes, self.sigma,
                      dual=pair, input_shape=self.input_shape)

    def __call__(self, item: Any, seed: int) -> dict[str, Any]:
        x, label, row = split_item(item)
        smooth = self.smooth()
        x = torch.as_tensor(x)
        kw = dict(n0=self.n0, n=self.n, alpha=self.alpha, batch_size=self.batch_size,
                  certificate=self.certificate)
        if self.base_seed is not None:
            if row is None:
                raise InputError("CertifyJob with base_seed needs items (x, label, row)")
            run = (self.base_seed, self.sigma, self.n0, self.n, self.batch_size)
            bank = _process_bank(run) if self.shared_noise else None
            return certify_one(smooth, x, label, row, seed=self.base_seed,
                               model_name=self.model_name, shared_noise=bank, **kw,
                               **self.options)
        cert = smooth.certify(x, seed=seed, **kw, **self.options)
        settings = {k: kw[k] for k in ("n0", "n", "alpha", "batch_size")}
        return smoothing_record(smooth.model, x, cert, sigma=smooth.sigma, settings=settings,
                                model_name=self.model_name, label=label, index=row)


def certify_on_executor(job: CertifyJob, inputs: Any, args: Any, on_record: Any = None,
                        progress: Any = "auto") -> list[dict[str, Any]]:
    """``certify_dataset`` on the executor of the ``--backend`` flags: ``job`` (with
    ``base_seed``) on every row of ``inputs``; records in row order; ``on_record`` sees each
    record as its input finishes; inputs that failed or timed out are reported together at
    the end (a lipbound error)."""
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
