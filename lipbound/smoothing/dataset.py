"""Certify a whole data set, one input at a time.

``certify_dataset`` is a plain loop over ``certify_one``; each input's noise seed is derived
from ``(seed, index)`` alone (``input_seed``), so the records do not depend on the order in
which inputs are processed, and the loop can be split across processes or machines (e.g. a Ray
executor calling ``certify_one``) with identical results.

Shared noise (``shared_noise=True``): every input is certified with the same noise samples,
those of ``seed`` itself, and a ``NoiseBank`` draws each noise chunk once for the whole data
set instead of once per input. Each record's guarantee is unchanged (the noise is independent
of the input, so its certificate is wrong with probability ``<= alpha``), and so is the
expected number of wrong certificates (``<= alpha * N``, by linearity, as is a union bound).
What changes is that the inputs' certificates are no longer independent of each other: their
failures are correlated, so the spread of the number of wrong certificates across repeated
runs is larger than with independent noise, and bounds that assume independence across
inputs do not apply. It saves the noise draws, which on small models cost about as much as
the forward passes (experiments/README.md, bench_smoothing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lipbound.errors import InputError, ShapeError
from lipbound.progress import ProgressFlag, bar
from lipbound.report.records import smoothing_record
from lipbound.smoothing.sampling import NoiseBank, derive_seed
from lipbound.smoothing.smooth import Smooth


def input_seed(seed: int, index: int) -> int:
    """The noise seed of input ``index`` (its row number in the source data) for base ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return derive_seed(seed, int(index))


def certify_one(
    smooth: Smooth,
    x: torch.Tensor,
    label: int | None,
    index: int,
    *,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    certificate="cohen",
    seed: int = 0,
    model_name: str | None = None,
    shared_noise: NoiseBank | None = None,
    **options,
) -> dict:
    """Certify one input and return its JSON-ready record
    (:func:`lipbound.report.records.smoothing_record`: the report schema's keys and ``idx``,
    ``label``, ``predict`` (-1 = abstain), ``radius``, ``correct``, ``certificate``, ``time``
    and the certificate's ``details``, including the input's seed).

    The input's seed is ``input_seed(seed, index)``; with a ``shared_noise`` bank it is
    ``seed`` itself, the bank's chunks reused (see the module docstring)."""
    own = input_seed(seed, index)  # validates seed
    if shared_noise is not None:
        own = seed
    cert = smooth.certify(x, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                          certificate=certificate, seed=own, noise_bank=shared_noise,
                          **options)
    settings = {"n0": n0, "n": n, "alpha": alpha, "batch_size": batch_size}
    if shared_noise is not None:
        settings["shared_noise"] = True
    return smoothing_record(smooth.model, x, cert, sigma=smooth.sigma, settings=settings,
                            model_name=model_name, index=int(index),
                            label=None if label is None else int(label))


def certify_dataset(
    smooth: Smooth,
    X: torch.Tensor,
    y: torch.Tensor | Sequence[int] | None = None,
    *,
    indices: Sequence[int] | None = None,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    certificate="cohen",
    seed: int = 0,
    progress: ProgressFlag = False,
    on_record: Callable[[dict], None] | None = None,
    model_name: str | None = None,
    shared_noise: bool = False,
    **options,
) -> list[dict]:
    """Records of ``certify_one`` for every row of ``X`` ([N, *in]); ``y`` optional labels.

    ``indices``: the rows' numbers in the source data (default ``0..N-1``); they name the
    records and fix the seeds. ``on_record`` is called with each record as soon as it exists
    (e.g. to stream a TSV); ``model_name`` goes into the records. Each record's guarantee is
    that of ``Smooth.certify`` at level ``alpha`` for that input. ``shared_noise``: certify
    every input with the noise of ``seed`` itself, drawn once (faster on small models; the
    certificates of different inputs are then correlated, see the module docstring)."""
    if not isinstance(X, torch.Tensor) or X.dim() < 1:
        raise InputError("X must be a tensor [N, *in]")
    count = X.shape[0]
    idx = list(range(count)) if indices is None else [int(i) for i in indices]
    if len(idx) != count:
        raise ShapeError(f"{len(idx)} indices for {count} inputs")
    if y is not None and len(y) != count:
        raise ShapeError(f"{len(y)} labels for {count} inputs")
    input_seed(seed, 0)  # validate once, before any work
    if not isinstance(shared_noise, bool):
        raise InputError(f"shared_noise must be True or False, got {shared_noise!r}")
    bank = NoiseBank() if shared_noise else None
    records = []
    for i in bar(range(count), progress=progress, total=count, desc="certify"):
        label = None if y is None else int(y[i])
        rec = certify_one(smooth, X[i], label, idx[i], n0=n0, n=n, alpha=alpha,
                          batch_size=batch_size, certificate=certificate, seed=seed,
                          model_name=model_name, shared_noise=bank, **options)
        if on_record is not None:
            on_record(rec)
        records.append(rec)
    return records
