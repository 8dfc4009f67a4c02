"""Picklable per-input jobs for :meth:`Executor.map`: ``job(item, seed) -> dict`` (JSON-ready).

``item`` is one input ``x`` (tensor or array ``[*in]``) or a pair ``(x, label)``. A model is
given as a registry name (``lipbound.models.load``; loaded once per worker process and kept
resident, on ``device``) or as a ``torch.nn.Module`` (pickled with the job). ``device="auto"``
picks CUDA when the worker sees a GPU (a Ray worker with ``num_gpus`` does), else the CPU.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from lipbound.errors import InputError, UnknownMethodError
from lipbound.specs import margin_spec

ModelRef = str | torch.nn.Module


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@functools.lru_cache(maxsize=8)
def _load_named(name: str, device: str) -> torch.nn.Module:
    import lipbound.models

    return lipbound.models.load(name, device=device)


def resident_model(model: ModelRef, device: str = "auto") -> torch.nn.Module:
    """The model on ``device``: a registry name is loaded once per process and cached; a
    module already on that device is used as is, otherwise a copy is moved there."""
    dev = resolve_device(device)
    if isinstance(model, str):
        return _load_named(model, str(dev))
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model must be a registry name or a torch.nn.Module, got "
                         f"{type(model).__name__}")
    first = next(model.parameters(), None)
    if first is None or first.device == dev:
        return model
    return copy.deepcopy(model).to(dev).eval()


def split_item(item: Any) -> tuple[Any, int | None]:
    """``(x, label)`` from an item that is ``x`` or ``(x, label)``."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], int(item[1])
    return item, None


@dataclass(frozen=True)
class SmoothingJob:
    """Randomized-smoothing certification of one input (``lipbound.Smooth(...).certify``).

    Returns the JSON record of ``lipbound.smoothing.records.record`` (without ``idx``): label,
    prediction (-1 abstains), radius (l2), correct, certificate, time, details. ``dual``: names
    of the (left, right) half-resolution models for the ``dual``/``best`` certificates.
    The guarantee is Smooth.certify's: with probability >= 1 - alpha over the noise drawn from
    this job's seed, the smoothed classifier predicts the returned class within the radius.
    """

    model: ModelRef
    sigma: float
    num_classes: int = 10
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch_size: int = 1000
    certificate: str = "cohen"
    dual: tuple[str, str] | None = None
    device: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, item: Any, seed: int) -> dict[str, Any]:
        from lipbound.smoothing import DualPair, Smooth
        from lipbound.smoothing.records import record

        x, label = split_item(item)
        model = resident_model(self.model, self.device)
        pair = None
        if self.dual is not None:
            left, right = (resident_model(m, self.device) for m in self.dual)
            pair = DualPair(left, right, split="checkerboard")
        smooth = Smooth(model, self.num_classes, self.sigma, dual=pair)
        x = torch.as_tensor(x)
        cert = smooth.certify(x, n0=self.n0, n=self.n, alpha=self.alpha,
                              batch_size=self.batch_size, certificate=self.certificate,
                              seed=seed, **self.options)
        rec = record(0, label, cert)
        rec.pop("idx")
        return rec


@dataclass(frozen=True)
class LipschitzJob:
    """Certified local Lipschitz constant of one input (``lipbound.local_lipschitz``) and,
    with ``output_bounds=True``, certified output bounds over the same ball.

    ``spec="margin"`` bounds the rows ``e_label - e_j`` (needs a label); ``None`` the outputs.
    ``method="bab"`` falls back to "alpha-crown" when branch-and-bound is not available (the
    record's ``method`` says which ran; ``fallback`` says why). ``timeout`` goes to
    local_lipschitz (BaB's anytime budget); the executor's timeout stops the whole job.
    """

    model: ModelRef
    eps: float
    norm: str = "inf"
    method: str = "crown"
    spec: str | None = None
    num_classes: int = 10
    data_range: tuple[float, float] | None = None
    timeout: float | None = None
    output_bounds: bool = False
    device: str = "auto"

    def __call__(self, item: Any, seed: int) -> dict[str, Any]:
        x, label = split_item(item)
        model = resident_model(self.model, self.device)
        x = torch.as_tensor(x).to(resolve_device(self.device))
        spec = self._spec(label)
        out: dict[str, Any] = {"label": label}
        res, method = self._lipschitz(model, x, spec, seed, out)
        out["lipschitz"] = res.to_dict()
        if self.output_bounds:
            lo, up = self._bounds(model, x, spec, method)
            out["lower"], out["upper"] = lo.tolist(), up.tolist()
        return out

    def _spec(self, label: int | None) -> torch.Tensor | None:
        if self.spec is None:
            return None
        if self.spec != "margin":
            raise InputError(f"spec must be None or 'margin', got {self.spec!r}")
        if label is None:
            raise InputError("spec='margin' needs items (x, label)")
        return margin_spec(label, self.num_classes)

    def _norm(self) -> float:
        return math.inf if str(self.norm) == "inf" else float(self.norm)

    def _lipschitz(self, model: torch.nn.Module, x: torch.Tensor, spec: Any, seed: int,
                   out: dict[str, Any]) -> tuple[Any, str]:
        import lipbound

        kw = dict(norm=self._norm(), spec=spec, data_range=self.data_range, seed=seed)
        try:
            res = lipbound.local_lipschitz(model, x, self.eps, method=self.method,
                                           timeout=self.timeout, **kw)
            return res, self.method
        except UnknownMethodError as exc:
            if self.method != "bab":
                raise
            out["fallback"] = f"method 'bab' unavailable ({exc}); used 'alpha-crown'"
            return lipbound.local_lipschitz(model, x, self.eps, method="alpha-crown",
                                            **kw), "alpha-crown"

    def _bounds(self, model: torch.nn.Module, x: torch.Tensor, spec: Any,
                method: str) -> tuple[torch.Tensor, torch.Tensor]:
        import lipbound

        ob_method = method if method in ("ibp", "crown", "alpha-crown", "bab") else "crown"
        return lipbound.output_bounds(model, x, self.eps, norm=self._norm(), spec=spec,
                                      method=ob_method, data_range=self.data_range)
