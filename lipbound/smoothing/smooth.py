"""``Smooth``: the randomized-smoothing front end (DESIGN section 2).

    smooth = Smooth(model, num_classes=10, sigma=0.25)
    c = smooth.certify(x, n0=100, n=100_000, alpha=0.001, batch_size=1000, certificate="cohen")
    c.prediction, c.radius, c.details          # -1 = abstain; l2 radius
    p = smooth.predict(x, n=1000, alpha=0.001, batch_size=1000)

Samples: ``n0`` selection samples (stream 0) fix every choice, ``n`` estimation samples
(stream 1) certify; ``predict`` uses its own stream 2. ``seed`` (int, ``torch.Generator`` or
``None`` for torch's default generator) fixes all noise; results do not depend on
``batch_size`` (see ``sampling.py``). The seed used is returned in ``details["seed"]``.
``noise_bank`` (a ``sampling.NoiseBank``) lets calls with the same seed reuse each other's
noise draws; it changes no result, only the time (``certify_dataset(shared_noise=True)``).
"""

from __future__ import annotations

import math
import numbers
import time

import numpy as np
import torch

from lipbound.errors import InputError, ShapeError
from lipbound.inputs import check_module, check_positive_int
from lipbound.smoothing.certificates import NAMES, Certification, Context, DualPair, build
from lipbound.smoothing.certificates.cohen import predict_from_counts
from lipbound.smoothing.sampling import (
    STREAM_ESTIMATE,
    STREAM_PREDICT,
    STREAM_SELECT,
    CountConsumer,
    Evaluator,
    NoiseBank,
    draw_samples,
    resolve_seed,
    run_pass,
)


def _alpha(v) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0.0 < float(v) < 1.0):
        raise InputError(f"alpha must lie in the open interval (0, 1), got {v!r}")
    return float(v)


def _bank(bank) -> NoiseBank | None:
    if bank is not None and not isinstance(bank, NoiseBank):
        raise InputError(f"noise_bank must be a lipbound.smoothing.sampling.NoiseBank or None, "
                         f"got {type(bank).__name__}")
    return bank


class Smooth:
    """Gaussian-smoothed classifier ``g(x) = argmax_c P[f(x + e) = c]``, ``e ~ N(0, sigma^2 I)``.

    ``model``: ``torch.nn.Module`` in eval mode mapping ``[B, *in] -> [B, num_classes]``.
    ``dual``: an optional ``DualPair`` of half-resolution models for the ``dual`` certificate.
    ``input_shape``: optional input shape without the batch dimension (lets ``x`` be given as
    ``[1, *in]`` unambiguously). ``noise_chunk``: samples per independently seeded noise chunk
    (part of the seed's meaning; the default, ``None``, is ``sampling.default_chunk`` of the
    input's size: keep it to reproduce results).
    """

    certificates = NAMES

    def __init__(
        self,
        model: torch.nn.Module,
        num_classes: int,
        sigma: float,
        *,
        dual: DualPair | None = None,
        input_shape: tuple[int, ...] | None = None,
        noise_chunk: int | None = None,
    ) -> None:
        if dual is not None and not isinstance(dual, DualPair):
            raise InputError("dual must be a lipbound.smoothing.DualPair")
        self.model = check_module(model)  # before anything runs it (training mode, not a module)
        self._check_modes(dual)
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
            raise InputError(f"sigma must be a positive number, got {sigma!r}")
        if not (math.isfinite(float(sigma)) and float(sigma) > 0):
            raise InputError(f"sigma must be a positive finite number, got {sigma!r}")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        if self.num_classes < 2:
            raise InputError("num_classes must be at least 2")
        self.sigma = float(sigma)
        self.dual = dual
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.noise_chunk = (None if noise_chunk is None
                            else check_positive_int(noise_chunk, "noise_chunk"))
        self._evaluator = Evaluator(model, self.num_classes, dual)

    # ------------------------------------------------------------------ helpers
    def _check_modes(self, dual: DualPair | None) -> None:
        """ModelModeError if the model or a dual half is in training mode (checked again at
        every call: the user may switch a module back to training)."""
        for mod in [self.model] + ([dual.left, dual.right] if dual else []):
            check_module(mod)

    def _device_dtype(self, x: torch.Tensor) -> tuple[torch.device, torch.dtype]:
        for p in self.model.parameters():
            dtype = p.dtype if p.dtype.is_floating_point else torch.float32
            return p.device, dtype
        return x.device, x.dtype if x.dtype.is_floating_point else torch.float32

    def _prepare(self, x) -> torch.Tensor:
        self._check_modes(self.dual)
        if not isinstance(x, torch.Tensor):
            try:
                x = torch.as_tensor(np.asarray(x))
            except Exception as exc:
                raise InputError(f"x must be a tensor, got {type(x).__name__}") from exc
        if x.numel() == 0:
            raise ShapeError("x is empty")
        device, dtype = self._device_dtype(x)
        x = x.detach().to(device=device, dtype=dtype)
        if not bool(torch.isfinite(x).all()):
            raise InputError("x contains NaN or inf")
        if self.input_shape is not None:
            if tuple(x.shape) == (1, *self.input_shape):
                x = x[0]
            if tuple(x.shape) != self.input_shape:
                raise ShapeError(
                    f"x has shape {tuple(x.shape)}, expected {self.input_shape} "
                    f"(or [1, *{self.input_shape}])"
                )
            return x
        # no declared shape: x is one input [*in]; accept [1, *in] when [*in] does not fit
        if x.dim() >= 2 and x.shape[0] == 1:
            with torch.no_grad():
                try:
                    out = self.model(x.unsqueeze(0))
                    fits = isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == 1
                except Exception:
                    fits = False
            if not fits:
                x = x[0]
        return x

    def _context(self, x, n0, n, batch_size, seed) -> Context:
        return Context(
            x=x,
            sigma=self.sigma,
            num_classes=self.num_classes,
            n0=n0,
            n=n,
            batch_size=batch_size,
            evaluator=self._evaluator,
            seed=seed,
        )

    # ------------------------------------------------------------------ API
    def predict(self, x, n: int, alpha: float, batch_size: int = 1000, seed=None,
                noise_bank: NoiseBank | None = None) -> int:
        """Cohen et al.'s PREDICT: the top class of ``n`` votes, or -1 (abstain) unless the
        two-sided binomial test of the top two counts has p-value ``<= alpha``.

        The returned class differs from the smoothed classifier's with probability
        ``<= alpha``."""
        n = check_positive_int(n, "n")
        alpha = _alpha(alpha)
        batch_size = check_positive_int(batch_size, "batch_size")
        x = self._prepare(x)
        bank = _bank(noise_bank)
        base = resolve_seed(seed)
        counts = CountConsumer(self.num_classes)
        run_pass(self._evaluator, x, self.sigma, base, STREAM_PREDICT, n, batch_size,
                 [counts], self.noise_chunk, bank)
        return predict_from_counts(counts.counts, alpha)

    def certify(
        self,
        x,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        batch_size: int = 1000,
        certificate="cohen",
        seed=None,
        noise_bank: NoiseBank | None = None,
        **options,
    ) -> Certification:
        """Certify ``x`` with the named certificate (see ``Smooth.certificates``).

        ``options`` go to the certificate (e.g. ``lipschitz_constant=``, ``radius_fn=``,
        ``maps=``, ``temperatures=``, ``selection=``, ``n_local=``; for ``best``:
        ``candidates=``, ``weights=``, ``mode=``). With probability ``>= 1 - alpha`` over the
        noise, a returned prediction ``A`` with radius ``R`` means that the certificate's
        smoothed classifier predicts A everywhere in the open l2 ball of radius R around x.
        """
        t0 = time.perf_counter()
        n0 = check_positive_int(n0, "n0")
        n = check_positive_int(n, "n")
        alpha = _alpha(alpha)
        batch_size = check_positive_int(batch_size, "batch_size")
        x = self._prepare(x)
        bank = _bank(noise_bank)
        cert = build(certificate, model=self.model, has_dual=self.dual is not None,
                     example_input=x, **options)
        base = resolve_seed(seed)
        ctx = self._context(x, n0, n, batch_size, base)
        selection = draw_samples(self._evaluator, x, self.sigma, base, STREAM_SELECT, n0,
                                 batch_size, self.noise_chunk, bank)
        plan = cert.plan(ctx, selection, alpha)
        drawn = run_pass(self._evaluator, x, self.sigma, base, STREAM_ESTIMATE, n, batch_size,
                         plan.consumers, self.noise_chunk, bank)
        result = cert.finish(ctx, plan)
        result.details.update(
            {
                "seed": base,
                "sigma": self.sigma,
                "n0": n0,
                "n": n,
                "alpha": alpha,
                "estimation_samples_drawn": drawn,
                "settings": cert.describe(),
            }
        )
        result.time = time.perf_counter() - t0
        return result
