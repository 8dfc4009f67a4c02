"""Gaussian noise sampling, batched model evaluation and order-independent accumulators.

Reproducibility contract. Sample ``i`` of a stream (selection, estimation, prediction) gets
its noise from the chunk ``i // chunk`` of that stream, and each chunk is drawn from its own
``torch.Generator`` whose seed is derived from ``(seed, stream, chunk index)`` (``chunk_seed``)
of samples and the device, never on ``batch_size``; integer statistics (class counts) and
float sums (accumulated per fixed-size chunk in a fixed order, see ``ChunkedSum``) are then
identical for every batch size, provided the model gives the same output for a sample
whatever batch it sits in (true of the usual CPU kernels for batches of two or more samples;
a batch of one may take a different matrix-vector kernel).

Noise is generated on the model's device with a generator on that device, so a CUDA run is
reproducible on CUDA and a CPU run on CPU, but the two differ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch

from lipbound.errors import InputError, ShapeError

STREAM_SELECT = 0
STREAM_ESTIMATE = 1
STREAM_PREDICT = 2
STREAM_NAMES = {
    STREAM_SELECT: "selection",
    STREAM_ESTIMATE: "estimation",
    STREAM_PREDICT: "prediction",
}

DEFAULT_CHUNK = 1000
SUM_CHUNK = 1000


def resolve_seed(seed: int | torch.Generator | None) -> int:
    """An integer base seed: ``int`` as is; a ``torch.Generator`` or ``None`` (torch's default
    generator, so ``torch.manual_seed`` makes it reproducible) draws one."""
    if isinstance(seed, bool):
        raise InputError("seed must be an int, a torch.Generator or None, not a bool")
    if isinstance(seed, (int, np.integer)):
        if seed < 0:
            raise InputError(f"seed must be non-negative, got {seed}")
        return int(seed)
    if seed is None or isinstance(seed, torch.Generator):
        gen = seed if seed is not None else None
        device = gen.device if gen is not None else "cpu"
        return int(torch.randint(0, 2**62, (1,), generator=gen, device=device).item())
    raise InputError(f"seed must be an int, a torch.Generator or None, got {type(seed).__name__}")


_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def chunk_seed(base: int, stream: int, chunk: int) -> int:
    """Seed of one noise chunk. torch's CPU generator keeps only the low 32 bits of a seed, so
    those are ``hash(base) + stream * 2^24 + chunk (mod 2^32)``: distinct for every chunk of one
    certification (up to 2^24 chunks a stream); the high bits (used by CUDA's Philox) hash
    ``(base, stream)``."""
    if not 0 <= chunk < 1 << 24:
        raise ValueError("too many noise chunks (at most 2^24 per stream)")
    h = _splitmix64(base & _MASK64)
    low = (h + (stream << 24) + chunk) & 0xFFFFFFFF
    high = _splitmix64(h ^ (stream + 1)) & 0x7FFFFFFF
    return (high << 32) | low


class NoiseStream:
    """Noisy copies ``x + sigma * eps_i`` of one input for sample indices ``0 <= i < total``."""

    def __init__(
        self,
        x: torch.Tensor,
        sigma: float,
        base_seed: int,
        stream: int,
        total: int,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        self.x = x
        self.sigma = float(sigma)
        self.base_seed = base_seed
        self.stream = stream
        self.total = total
        self.chunk = chunk
        self._cached: tuple[int, torch.Tensor] | None = None
        self._gen = torch.Generator(device=x.device)

    def _chunk(self, k: int) -> torch.Tensor:
        if self._cached is not None and self._cached[0] == k:
            return self._cached[1]
        size = min(self.chunk, self.total - k * self.chunk)
        self._gen.manual_seed(chunk_seed(self.base_seed, self.stream, k))
        eps = torch.randn(
            (size, *self.x.shape), generator=self._gen, device=self.x.device, dtype=self.x.dtype
        )
        self._cached = (k, eps)
        return eps

    def points(self, start: int, stop: int) -> torch.Tensor:
        """``[stop - start, *x.shape]`` noisy points for sample indices ``start..stop-1``."""
        if not 0 <= start < stop <= self.total:
            raise ValueError(f"bad sample range {start}..{stop} of {self.total}")
        k0, k1 = start // self.chunk, (stop - 1) // self.chunk
        if k0 == k1:
            off = k0 * self.chunk
            return torch.add(self.x, self._chunk(k0)[start - off : stop - off], alpha=self.sigma)
        out = torch.empty((stop - start, *self.x.shape), device=self.x.device, dtype=self.x.dtype)
        pos = start
        while pos < stop:
            k = pos // self.chunk
            off = k * self.chunk
            eps = self._chunk(k)
            hi = min(stop, off + eps.shape[0])
            out[pos - start : hi - start] = eps[pos - off : hi - off]
            pos = hi
        # the same operation as the one-chunk path, so that the values are bit-identical
        return torch.add(self.x, out, alpha=self.sigma, out=out)


@dataclasses.dataclass
class Evaluator:
    """Runs the base model (and the DRS pair, if any) with shape and finiteness checks."""

    model: torch.nn.Module
    num_classes: int
    dual: object | None = None  # certificates.dual.DualPair

    def _check(self, out: torch.Tensor, what: str, where: str) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != self.num_classes:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ShapeError(
                f"{what} returned outputs of shape {shape} on a batch of noisy inputs; expected "
                f"[batch, {self.num_classes}] (num_classes={self.num_classes})"
            )
        if bool(torch.isfinite(out.sum())):  # fast path: any NaN/inf makes the sum non-finite
            return out
        finite = torch.isfinite(out).all(dim=1)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise InputError(
                f"{what} returned non-finite outputs (NaN or inf) on {bad} of {out.shape[0]} "
                f"noisy samples ({where})"
            )
        return out

    def logits(self, points: torch.Tensor, where: str) -> torch.Tensor:
        with torch.no_grad():
            return self._check(self.model(points), "the model", where)

    def dual_logits(self, points: torch.Tensor, where: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self.dual is None:
            raise InputError("the 'dual' certificate needs Smooth(..., dual=DualPair(...))")
        with torch.no_grad():
            left, right = self.dual.split(points)
            out_l = self._check(self.dual.left(left), "the DRS left model", where)
            out_r = self._check(self.dual.right(right), "the DRS right model", where)
        return out_l, out_r


class Samples:
    """A block of noisy samples ``start..start+len-1`` of one stream, with lazily computed
    (and cached) model outputs. Certificates share one ``Samples`` per batch."""

    def __init__(
        self,
        evaluator: Evaluator,
        points: torch.Tensor,
        start: int,
        stream: int,
        total: int,
        batch_size: int,
    ) -> None:
        self.evaluator = evaluator
        self.points = points
        self.start = start
        self.stream = stream
        self.total = total
        self.batch_size = batch_size
        self.cache: dict = {}

    def __len__(self) -> int:
        return self.points.shape[0]

    def _where(self, lo: int, hi: int) -> str:
        name = STREAM_NAMES.get(self.stream, str(self.stream))
        return (
            f"{name} samples {self.start + lo}..{self.start + hi - 1} "
            f"of the {self.total} {name} samples"
        )

    def _batched(self, fn: Callable, key: str):
        if key not in self.cache:
            parts = []
            for lo in range(0, len(self), self.batch_size):
                hi = min(lo + self.batch_size, len(self))
                parts.append(fn(self.points[lo:hi], self._where(lo, hi)))
            if isinstance(parts[0], tuple):
                self.cache[key] = tuple(torch.cat(p) for p in zip(*parts))
            else:
                self.cache[key] = torch.cat(parts) if len(parts) > 1 else parts[0]
        return self.cache[key]

    @property
    def logits(self) -> torch.Tensor:
        return self._batched(self.evaluator.logits, "logits")

    @property
    def dual_logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._batched(self.evaluator.dual_logits, "dual_logits")

    @property
    def predictions(self) -> torch.Tensor:
        if "pred" not in self.cache:
            self.cache["pred"] = self.logits.argmax(dim=1)
        return self.cache["pred"]


class Consumer:
    """Accumulates a statistic over the estimation samples ``0..limit-1`` (all if None)."""

    limit: int | None = None

    def update(self, batch: Samples, count: int) -> None:  # first `count` samples of batch
        raise NotImplementedError


class CountConsumer(Consumer):
    """Counts of base-classifier predictions per class (``which``: main, left or right model)."""

    def __init__(self, num_classes: int, which: str = "main", limit: int | None = None) -> None:
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self.which = which
        self.limit = limit
        self.seen = 0

    def update(self, batch: Samples, count: int) -> None:
        if self.which == "main":
            pred = batch.predictions[:count]
        else:
            key = f"pred_{self.which}"
            if key not in batch.cache:
                left, right = batch.dual_logits
                batch.cache["pred_left"] = left.argmax(dim=1)
                batch.cache["pred_right"] = right.argmax(dim=1)
            pred = batch.cache[key][:count]
        self.counts += torch.bincount(pred, minlength=len(self.counts)).cpu().numpy()
        self.seen += count


class ChunkedSum:
    """Sum of float64 rows, computed per fixed chunk of ``SUM_CHUNK`` rows in row order, so the
    result does not depend on how the rows were split into batches."""

    def __init__(self, width: int, chunk: int = SUM_CHUNK) -> None:
        self.chunk = chunk
        self.total = torch.zeros(width, dtype=torch.float64)
        self._buf: list[torch.Tensor] = []
        self._buffered = 0

    def add(self, rows: torch.Tensor) -> None:
        self._buf.append(rows.detach().to("cpu", torch.float64))
        self._buffered += rows.shape[0]
        while self._buffered >= self.chunk:
            allrows = torch.cat(self._buf)
            self.total += allrows[: self.chunk].sum(dim=0)
            rest = allrows[self.chunk :]
            self._buf = [rest] if rest.shape[0] else []
            self._buffered = rest.shape[0]

    def result(self) -> np.ndarray:
        if self._buffered:
            self.total += torch.cat(self._buf).sum(dim=0)
            self._buf, self._buffered = [], 0
        return self.total.numpy().copy()


def run_pass(
    evaluator: Evaluator,
    x: torch.Tensor,
    sigma: float,
    base_seed: int,
    stream: int,
    total: int,
    batch_size: int,
    consumers: Sequence[Consumer],
    chunk: int = DEFAULT_CHUNK,
) -> int:
    """Feed samples ``0..total-1`` of a stream to every consumer (each up to its own limit).

    Returns the number of samples drawn (the largest limit)."""
    limits = [total if c.limit is None else min(c.limit, total) for c in consumers]
    needed = max(limits, default=0)
    if needed == 0:
        return 0
    noise = NoiseStream(x, sigma, base_seed, stream, total, chunk)
    for start in range(0, needed, batch_size):
        stop = min(start + batch_size, needed)
        batch = Samples(evaluator, noise.points(start, stop), start, stream, total, batch_size)
        for cons, lim in zip(consumers, limits):
            if start < lim:
                cons.update(batch, min(stop, lim) - start)
    return needed


def draw_samples(
    evaluator: Evaluator,
    x: torch.Tensor,
    sigma: float,
    base_seed: int,
    stream: int,
    total: int,
    batch_size: int,
    chunk: int = DEFAULT_CHUNK,
) -> Samples:
    """All ``total`` samples of a stream as one ``Samples`` (for the small selection set)."""
    noise = NoiseStream(x, sigma, base_seed, stream, total, chunk)
    return Samples(evaluator, noise.points(0, total), 0, stream, total, batch_size)
