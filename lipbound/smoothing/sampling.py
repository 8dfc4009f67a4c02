"""Gaussian noise sampling, batched model evaluation and order-independent accumulators.

Reproducibility contract. Sample ``i`` of a stream (selection, estimation, prediction) gets
its noise from the chunk ``i // chunk`` of that stream, and each chunk is drawn from its own
``torch.Generator`` (on the input's device) whose seed is derived from ``(seed, stream, chunk
index)`` (``chunk_seed``). The chunk size is ``default_chunk(x.numel())`` unless given: it
depends on the number of values of one input only. The noise of a sample therefore depends on
the seed, the stream, the chunk size (so the input size) and the device, never on
``batch_size``. Statistics are accumulated exactly (integer
class counts; fixed-point integer sums for soft outputs, see ``FixedPointSum``), so they are
identical for every batch size, provided the model gives the same output for a sample whatever
batch it sits in (true of the usual CPU kernels for batches of 16 samples or more; a batch of
one may take a different matrix-vector kernel).

Speed. Noise is drawn in large chunks (about ``CHUNK_VALUES`` values each) straight into a
preallocated chunk buffer (in the input's dtype, on its device) and the input is added in
place; batches inside a chunk are views of it (batches that straddle chunks are gathered into a
preallocated batch buffer); counts and sums stay on the device; the finiteness check of the
model outputs is accumulated on the device too. A pass over the estimation samples thus makes
one host synchronisation at its end (certificates that call a radius function per sample, such
as ``local-margins``, synchronise per batch by nature).
"""

from __future__ import annotations

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

CHUNK_VALUES = 1 << 20  # noise values per chunk: 4 MiB in float32


def default_chunk(numel: int) -> int:
    """Samples per noise chunk for inputs of ``numel`` values: as many as ``CHUNK_VALUES``
    values hold (at least one), rounded down to a multiple of 1000 when that is at least 1000,
    so that batch sizes dividing 1000 never straddle two chunks.

    Large chunks are what makes the sampler cheap on small models: one long generator call per
    chunk instead of one per batch (a generator call between every two forward passes slows
    the forward passes on the benchmark CPU, see experiments/README.md, bench_smoothing).
    Memory: one chunk holds at most ``max(CHUNK_VALUES, numel)`` values, whatever ``n``."""
    if numel < 1:
        raise ValueError("an input needs at least one value")
    samples = max(1, CHUNK_VALUES // numel)
    return samples - samples % 1000 if samples >= 1000 else samples


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
        device = seed.device if seed is not None else "cpu"
        return int(torch.randint(0, 2**62, (1,), generator=seed, device=device).item())
    raise InputError(f"seed must be an int, a torch.Generator or None, got {type(seed).__name__}")


_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_seed(base: int, index: int) -> int:
    """A seed for item ``index`` (e.g. the input index of a data set) from a base seed: distinct
    items get unrelated seeds, and the result does not depend on the order of processing."""
    return _splitmix64((_splitmix64(base & _MASK64) + index) & _MASK64) >> 2


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


class NoiseBank:
    """Noise chunks kept for reuse by the certifications of many inputs that share one seed
    (``certify_dataset(..., shared_noise=True)``).

    A chunk's noise is a function of its key alone (base seed, stream, chunk size and index,
    sample count, sigma, input shape, dtype, device), so a chunk taken from the bank is exactly
    the tensor ``NoiseStream`` would draw: the bank changes no value, only the time (the draw is
    paid once per chunk instead of once per input). It keeps chunks while it holds fewer than
    ``capacity`` values (default 2^24: 64 MiB in float32) and draws the others each time
    without keeping them, so its memory does not grow with ``n`` or with the number of inputs.
    ``draws`` counts the chunks drawn, ``hits`` the reads served from kept chunks."""

    def __init__(self, capacity: int = 1 << 24) -> None:
        if capacity < 0:
            raise InputError(f"NoiseBank capacity must be a non-negative number of values, "
                             f"got {capacity!r}")
        self.capacity = int(capacity)
        self._held = 0
        self._chunks: dict[tuple, torch.Tensor] = {}
        self.draws = 0
        self.hits = 0

    def lookup(self, key: tuple) -> torch.Tensor | None:
        """The kept noise of chunk ``key``, or None."""
        noise = self._chunks.get(key)
        if noise is not None:
            self.hits += 1
        return noise

    def keep(self, key: tuple, noise: torch.Tensor) -> None:
        """Keep a copy of a freshly drawn chunk if it fits in the capacity."""
        self.draws += 1
        if key not in self._chunks and self._held + noise.numel() <= self.capacity:
            self._chunks[key] = noise.clone()
            self._held += noise.numel()


class NoiseStream:
    """Noisy copies ``x + sigma * eps_i`` of one input for sample indices ``0 <= i < total``.

    Each chunk of noise is drawn (already scaled by sigma, in x's dtype on x's device) into
    one reused buffer and ``x`` is added in place, one correctly rounded addition per element,
    so a sample's point is bit-identical however the batches are cut. ``points`` returns a view
    of that buffer when the range lies in one chunk (no copy; the usual case) and otherwise
    gathers the pieces into a reused batch buffer. A returned tensor is valid until the next
    call to ``points``. ``chunk``: samples per chunk, ``default_chunk(x.numel())`` if None.
    Memory: one chunk and one batch, whatever ``total``. ``bank``: a ``NoiseBank`` to take
    chunks from and keep them in (same values, see there).
    """

    def __init__(
        self,
        x: torch.Tensor,
        sigma: float,
        base_seed: int,
        stream: int,
        total: int,
        chunk: int | None = None,
        bank: NoiseBank | None = None,
    ) -> None:
        if chunk is None:
            chunk = default_chunk(x.numel())
        self.bank = bank
        self.x = x
        self.sigma = float(sigma)
        self.base_seed = base_seed
        self.stream = stream
        self.total = total
        self.chunk = chunk
        self._gen = torch.Generator(device=x.device)
        self._pts = torch.empty((min(chunk, total), *x.shape), device=x.device, dtype=x.dtype)
        self._pts_chunk = -1
        self._out: torch.Tensor | None = None

    def _size(self, k: int) -> int:
        """Samples in chunk ``k`` (the last one may be short)."""
        return min(self.chunk, self.total - k * self.chunk)

    def _chunk(self, k: int) -> torch.Tensor:
        size = self._size(k)
        pts = self._pts[:size]
        if self._pts_chunk != k:
            key = self._key(k, size)
            noise = None if self.bank is None else self.bank.lookup(key)
            if noise is not None:
                torch.add(noise, self.x, out=pts)  # the same rounding as pts.add_(x) below
            else:
                self._gen.manual_seed(chunk_seed(self.base_seed, self.stream, k))
                pts.normal_(0.0, self.sigma, generator=self._gen)
                if self.bank is not None:
                    self.bank.keep(key, pts)
                pts.add_(self.x)
            self._pts_chunk = k
        return pts

    def _key(self, k: int, size: int) -> tuple:
        x = self.x
        return (self.base_seed, self.stream, self.chunk, k, size, self.sigma, tuple(x.shape),
                x.dtype, x.device)

    def points(self, start: int, stop: int) -> torch.Tensor:
        """``[stop - start, *x.shape]`` noisy points for sample indices ``start..stop-1``."""
        if not 0 <= start < stop <= self.total:
            raise ValueError(f"bad sample range {start}..{stop} of {self.total}")
        k = start // self.chunk
        off = k * self.chunk
        if stop <= off + self.chunk:  # one chunk
            noise = None if self.bank is None else self.bank.lookup(self._key(k, self._size(k)))
            if noise is not None:  # batch-sized sums stay in cache for the forward pass
                return torch.add(noise[start - off : stop - off], self.x,
                                 out=self._batch(stop - start))
            return self._chunk(k)[start - off : stop - off]  # a view
        out = self._batch(stop - start)
        pos = start
        while pos < stop:
            k = pos // self.chunk
            off = k * self.chunk
            pts = self._chunk(k)
            hi = min(stop, off + pts.shape[0])
            out[pos - start : hi - start].copy_(pts[pos - off : hi - off])
            pos = hi
        return out

    def _batch(self, m: int) -> torch.Tensor:
        """The reused batch buffer, ``[m, *x.shape]``."""
        if self._out is None or self._out.shape[0] < m:
            self._out = torch.empty((m, *self.x.shape), device=self.x.device, dtype=self.x.dtype)
        return self._out[:m]


class FiniteTally:
    """Watches the model outputs of one pass for NaN or inf.

    Fast mode (``exact=False``) keeps one running sum per model on the device (any NaN or inf
    makes it non-finite; no host synchronisation); ``suspicious()`` reads it once. Exact mode
    counts the offending samples; ``check()`` raises ``InputError`` naming the count."""

    def __init__(self, stream: int, total: int, exact: bool = False,
                 span: tuple[int, int] | None = None) -> None:
        self.stream, self.total, self.exact, self.span = stream, total, exact, span
        self._acc: dict[str, torch.Tensor] = {}

    def add(self, out: torch.Tensor, what: str) -> None:
        if self.exact:
            val = torch.isfinite(out).all(dim=1).logical_not().sum()
        else:
            val = out.sum(dtype=torch.float64 if out.dtype == torch.float64 else torch.float32)
        prev = self._acc.get(what)
        self._acc[what] = val if prev is None else prev + val

    def suspicious(self) -> list[str]:
        """Models whose outputs may contain NaN or inf (fast mode; a finite sum that overflowed
        is also reported, and the exact recount then clears it)."""
        return [w for w, v in self._acc.items() if not bool(torch.isfinite(v))]

    def check(self) -> None:
        if not self.exact:
            raise RuntimeError("check() needs an exact tally")
        for what, bad in self._acc.items():
            count = int(bad)
            if count:
                name = STREAM_NAMES.get(self.stream, str(self.stream))
                where = (f"{self.total} noisy samples ({name} samples)" if self.span is None
                         else f"the {self.span[1] - self.span[0]} noisy samples "
                              f"{self.span[0]}..{self.span[1] - 1} of the {self.total} "
                              f"{name} samples")
                raise InputError(
                    f"{what} returned non-finite outputs (NaN or inf) on {count} of {where}"
                )


class Evaluator:
    """Runs the base model (and the DRS pair, if any) under ``torch.no_grad`` with shape
    checks; finiteness goes to a ``FiniteTally``."""

    def __init__(self, model: torch.nn.Module, num_classes: int, dual=None) -> None:
        self.model, self.num_classes, self.dual = model, num_classes, dual

    def _check(self, out, what: str, tally: FiniteTally) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != self.num_classes:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ShapeError(
                f"{what} returned outputs of shape {shape} on a batch of noisy inputs; expected "
                f"[batch, {self.num_classes}] (num_classes={self.num_classes})"
            )
        tally.add(out, what)
        return out

    def logits(self, points: torch.Tensor, tally: FiniteTally) -> torch.Tensor:
        with torch.no_grad():
            return self._check(self.model(points), "the model", tally)

    def dual_logits(self, points: torch.Tensor, tally: FiniteTally):
        if self.dual is None:
            raise InputError("the 'dual' certificate needs Smooth(..., dual=DualPair(...))")
        with torch.no_grad():
            left, right = self.dual.split(points)
            out_l = self._check(self.dual.left(left), "the DRS left model", tally)
            out_r = self._check(self.dual.right(right), "the DRS right model", tally)
        return out_l, out_r


class Samples:
    """A block of noisy samples ``start..start+len-1`` of one stream, with lazily computed
    (and cached) model outputs. Certificates share one ``Samples`` per batch.

    ``immediate=True`` (the selection samples; ``tally`` exact) checks finiteness as soon as
    outputs are computed; otherwise the pass checks once at its end and consumers that read
    values on the host call ``require_finite()`` first."""

    def __init__(
        self,
        evaluator: Evaluator,
        points: torch.Tensor,
        start: int,
        tally: FiniteTally,
        batch_size: int,
        immediate: bool = False,
    ) -> None:
        self.evaluator = evaluator
        self.points = points
        self.start = start
        self.tally = tally
        self.batch_size = batch_size
        self.immediate = immediate
        self.cache: dict = {}

    def __len__(self) -> int:
        return self.points.shape[0]

    def _batched(self, fn: Callable, key: str):
        if key not in self.cache:
            parts = [
                fn(self.points[lo : lo + self.batch_size], self.tally)
                for lo in range(0, len(self), self.batch_size)
            ]
            if isinstance(parts[0], tuple):
                self.cache[key] = tuple(torch.cat(p) for p in zip(*parts))
            else:
                self.cache[key] = torch.cat(parts) if len(parts) > 1 else parts[0]
            if self.immediate:
                self.tally.check()
        return self.cache[key]

    def require_finite(self) -> None:
        """Raise ``InputError`` now if this batch's outputs contain NaN or inf."""
        if self.immediate:
            return  # already checked
        exact = FiniteTally(self.tally.stream, self.tally.total, exact=True,
                            span=(self.start, self.start + len(self)))
        for key, what in (("logits", ("the model",)),
                          ("dual_logits", ("the DRS left model", "the DRS right model"))):
            if key in self.cache:
                outs = self.cache[key] if isinstance(self.cache[key], tuple) else (
                    self.cache[key],)
                for out, name in zip(outs, what):
                    exact.add(out, name)
        exact.check()

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

    def side_predictions(self, which: str) -> torch.Tensor:
        """Predictions of the DRS ``left`` or ``right`` model."""
        key = f"pred_{which}"
        if key not in self.cache:
            left, right = self.dual_logits
            self.cache["pred_left"] = left.argmax(dim=1)
            self.cache["pred_right"] = right.argmax(dim=1)
        return self.cache[key]


class Consumer:
    """Accumulates a statistic over the estimation samples ``0..limit-1`` (all if None)."""

    limit: int | None = None

    def update(self, batch: Samples, count: int) -> None:  # first `count` samples of batch
        raise NotImplementedError


class CountConsumer(Consumer):
    """Counts of base-classifier predictions per class (``which``: main, left or right model),
    kept on the device (``index_add_``: no host synchronisation, exact integers)."""

    def __init__(self, num_classes: int, which: str = "main", limit: int | None = None) -> None:
        self.num_classes = num_classes
        self.which = which
        self.limit = limit
        self.seen = 0
        self._counts: torch.Tensor | None = None
        self._ones: torch.Tensor | None = None

    def update(self, batch: Samples, count: int) -> None:
        if self.which == "main":
            pred = batch.predictions[:count]
        else:
            pred = batch.side_predictions(self.which)[:count]
        if self._counts is None:
            self._counts = torch.zeros(self.num_classes, dtype=torch.int64, device=pred.device)
        if self._ones is None or self._ones.shape[0] < count:
            self._ones = torch.ones(count, dtype=torch.int64, device=pred.device)
        self._counts.index_add_(0, pred, self._ones[:count])
        self.seen += count

    @property
    def counts(self) -> np.ndarray:
        if self._counts is None:
            return np.zeros(self.num_classes, dtype=np.int64)
        return self._counts.cpu().numpy()


def fraction_bits(total: int) -> int:
    """Fixed-point fraction bits for sums of ``total`` values in [0, 1] within int64."""
    return max(8, min(40, 62 - int(total).bit_length()))


class FixedPointSum:
    """Exact sum of rows of values in [0, 1], each rounded to a multiple of ``2^-bits``.

    Integer sums do not depend on the order of addition, so the result is the same for every
    batch size and device. Each value moves by at most ``2^-(bits+1)`` (``resolution``)."""

    def __init__(self, width: int, total: int) -> None:
        self.width = width
        self.bits = fraction_bits(total)
        self.scale = float(2**self.bits)
        self._sum: torch.Tensor | None = None

    @property
    def resolution(self) -> float:
        return 2.0 ** -(self.bits + 1)

    def add(self, rows: torch.Tensor) -> None:
        q = torch.round(rows.clamp(0.0, 1.0) * self.scale).to(torch.int64).sum(dim=0)
        self._sum = q if self._sum is None else self._sum + q

    def result(self) -> list[int]:
        """The exact integer sums (Python ints, in units of ``2^-bits``)."""
        if self._sum is None:
            return [0] * self.width
        return [int(v) for v in self._sum.cpu().tolist()]


def run_pass(
    evaluator: Evaluator,
    x: torch.Tensor,
    sigma: float,
    base_seed: int,
    stream: int,
    total: int,
    batch_size: int,
    consumers: Sequence[Consumer],
    chunk: int | None = None,
    bank: NoiseBank | None = None,
) -> int:
    """Feed samples ``0..total-1`` of a stream to every consumer (each up to its own limit).

    Raises ``InputError`` if the model returned NaN/inf on any sample. Returns the number of
    samples drawn (the largest limit)."""
    limits = [total if c.limit is None else min(c.limit, total) for c in consumers]
    needed = max(limits, default=0)
    if needed == 0:
        return 0
    noise = NoiseStream(x, sigma, base_seed, stream, total, chunk, bank)
    tally = FiniteTally(stream, needed)
    for start in range(0, needed, batch_size):
        stop = min(start + batch_size, needed)
        batch = Samples(evaluator, noise.points(start, stop), start, tally, batch_size)
        for cons, lim in zip(consumers, limits):
            if start < lim:
                cons.update(batch, min(stop, lim) - start)
    suspects = tally.suspicious()
    if suspects:  # rare: recount exactly (the noise is reproducible) to name the count
        _recount(evaluator, noise, needed, batch_size, suspects).check()
    return needed


def _recount(evaluator: Evaluator, noise: NoiseStream, needed: int, batch_size: int,
             suspects: list[str]) -> FiniteTally:
    exact = FiniteTally(noise.stream, needed, exact=True)
    for start in range(0, needed, batch_size):
        points = noise.points(start, min(start + batch_size, needed))
        if "the model" in suspects:
            evaluator.logits(points, exact)
        if any("DRS" in w for w in suspects):
            evaluator.dual_logits(points, exact)
    return exact


def draw_samples(
    evaluator: Evaluator,
    x: torch.Tensor,
    sigma: float,
    base_seed: int,
    stream: int,
    total: int,
    batch_size: int,
    chunk: int | None = None,
    bank: NoiseBank | None = None,
) -> Samples:
    """All ``total`` samples of a stream as one ``Samples`` (for the small selection set)."""
    noise = NoiseStream(x, sigma, base_seed, stream, total, chunk, bank)
    tally = FiniteTally(stream, total, exact=True)
    return Samples(evaluator, noise.points(0, total), 0, tally, batch_size, immediate=True)
