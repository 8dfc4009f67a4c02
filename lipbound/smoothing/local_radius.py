"""Deterministic l2 radii of the base classifier at noisy points (for ``local-margins``).

A radius function is an object with ``radii(model, points, label, logits=None, target=None)``
returning a float64 tensor ``r`` of shape ``[m]`` such that, for every point ``p_i`` where the
base classifier predicts ``label``, ``argmax f(p_i + d) == label`` for all ``||d||_2 < r_i``.
Where it predicts another class the value is irrelevant (the certificate masks it).
``logits`` (the model's outputs at ``points``) may be passed to save a forward pass; ``target``
says that only whether ``r_i >= target`` matters (a radius function may then return a cheaper
answer that is still a valid radius). A plain callable ``fn(model, points, label)`` is wrapped
by ``as_radius_fn``.

Provided:

* ``GlobalLipschitzRadius``: ``min_j (f_label - f_j)(p) / L_{label, j}`` with certified global
  constants of the logit differences (naive product of spectral norms by default). Batched and
  cheap.
* ``LocalLipschitzRadius``: the same with local constants from ``lipbound.local_lipschitz``
  over the l2 ball of radius ``eps`` around each point (spec rows ``e_label - e_j``):
  ``min(eps, min_j margin_j / U_j)``. One bound call per point.
* ``OutputBoundsRadius``: bisection on ``eps`` for the largest radius at which
  ``lipbound.output_bounds`` proves every margin positive. Several bound calls per point.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import torch

from lipbound.api import local_lipschitz, output_bounds
from lipbound.errors import InputError, UnsupportedModelError
from lipbound.smoothing.lipschitz_constants import cached_pair_lipschitz
from lipbound.specs import margin_spec


def _margins(logits: torch.Tensor, label: int) -> torch.Tensor:
    """Margins ``f_label - f_j`` (j != label) in float64, lowered by an allowance for the
    rounding of the model's forward pass in its own precision: ``1000 u (1 + max_j |f_j|)``
    with ``u`` the unit roundoff of ``logits.dtype`` (1.2e-4 relative for float32). The
    Lipschitz and output-bound arguments are about the exact network; a sample counts only if
    its lowered margin is positive, so rounding cannot turn a wrong class into a right one."""
    z = logits.to(torch.float64)
    unit = torch.finfo(logits.dtype).eps if logits.dtype.is_floating_point else 0.0
    slack = 1000 * unit * (1 + z.abs().amax(dim=1, keepdim=True))
    m = z[:, label : label + 1] - z - slack
    keep = [j for j in range(z.shape[1]) if j != label]
    return m[:, keep]


class LocalRadius:
    """Base class of radius functions (see module docstring)."""

    name = "custom"
    budget: int | None = None  # default number of estimation samples for local-margins

    def radii(self, model, points, label, logits=None, target=None) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"radius_fn": self.name}


class CallableRadius(LocalRadius):
    """Wraps ``fn(model, points, label)`` (optionally with ``logits=`` / ``target=``)."""

    def __init__(self, fn: Callable, name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom")
        params = inspect.signature(fn).parameters
        self._kw = {k for k in ("logits", "target") if k in params}

    def radii(self, model, points, label, logits=None, target=None) -> torch.Tensor:
        kw = {k: v for k, v in (("logits", logits), ("target", target)) if k in self._kw}
        out = torch.as_tensor(self.fn(model, points, label, **kw), dtype=torch.float64)
        if out.shape != (points.shape[0],):
            raise InputError(
                f"radius function {self.name!r} returned shape {tuple(out.shape)}, expected "
                f"[{points.shape[0]}]"
            )
        return out.cpu()


def as_radius_fn(fn) -> LocalRadius:
    if isinstance(fn, LocalRadius):
        return fn
    if callable(fn):
        return CallableRadius(fn)
    raise InputError(f"radius_fn must be a LocalRadius or a callable, got {type(fn).__name__}")


class GlobalLipschitzRadius(LocalRadius):
    """Margins over certified global constants of the logit differences."""

    name = "global-lipschitz"

    def __init__(self, pair_constants: np.ndarray | float | None = None) -> None:
        self.pair_constants = pair_constants

    def _pairs(self, model, points: torch.Tensor, k: int) -> np.ndarray:
        if self.pair_constants is None:
            return cached_pair_lipschitz(model, points[0])
        if np.ndim(self.pair_constants) == 0:
            return np.full((k, k), float(self.pair_constants))
        return np.asarray(self.pair_constants, dtype=np.float64)

    def radii(self, model, points, label, logits=None, target=None) -> torch.Tensor:
        if logits is None:
            with torch.no_grad():
                logits = model(points)
        k = logits.shape[1]
        pairs = self._pairs(model, points, k)
        lip = torch.as_tensor(np.delete(pairs[label], label), dtype=torch.float64)
        m = _margins(logits, label).cpu()
        r = m.div(lip).min(dim=1).values
        return r


class LocalLipschitzRadius(LocalRadius):
    """``min(eps, min_j margin_j / U_j)`` with ``U`` from ``lipbound.local_lipschitz`` (l2 ball).

    ``eps``: a float, or ``None`` for ``factor`` times the global-Lipschitz radius of the point
    (or ``target`` when certifying a fixed R).
    """

    name = "local-lipschitz"
    budget = 200
    selection_budget = 20

    def __init__(self, eps: float | None = None, method: str = "crown", factor: float = 4.0):
        self.eps, self.method, self.factor = eps, method, factor

    def describe(self) -> dict:
        return {"radius_fn": self.name, "eps": self.eps, "method": self.method}

    def radii(self, model, points, label, logits=None, target=None) -> torch.Tensor:
        if logits is None:
            with torch.no_grad():
                logits = model(points)
        k = logits.shape[1]
        spec = margin_spec(label, k, dtype=points.dtype).to(points.device)
        m = _margins(logits, label).cpu()
        if target is not None:
            eps_all = torch.full((points.shape[0],), float(target), dtype=torch.float64)
        elif self.eps is not None:
            eps_all = torch.full((points.shape[0],), float(self.eps), dtype=torch.float64)
        else:
            g = GlobalLipschitzRadius().radii(model, points, label, logits=logits)
            eps_all = torch.clamp(g * self.factor, min=1e-6)
        out = torch.full((points.shape[0],), -1.0, dtype=torch.float64)
        for i in range(points.shape[0]):
            if float(m[i].min()) <= 0:
                continue
            eps = float(eps_all[i])
            res = local_lipschitz(model, points[i], eps, norm=2, spec=spec, method=self.method)
            upper = torch.as_tensor(res.upper, dtype=torch.float64).reshape(-1).cpu()
            r = (m[i] / upper).min()
            out[i] = min(eps, float(r))
        return out


class OutputBoundsRadius(LocalRadius):
    """Largest ``eps`` found by bisection at which ``lipbound.output_bounds`` (CROWN by default)
    proves ``f_label - f_j > 0`` on the l2 ball for every j.

    The search starts from the global-Lipschitz radius when the naive product applies (already
    certified, no bound call) and bisects ``steps`` times in ``[lo, growth * lo]`` (or
    ``[0, eps_max]``). With ``target`` it makes a single call at ``eps = target``.
    """

    name = "output-bounds"
    budget = 200
    selection_budget = 20

    def __init__(self, eps_max: float = 2.0, steps: int = 6, growth: float = 4.0,
                 method: str = "crown") -> None:
        self.eps_max, self.steps, self.growth, self.method = eps_max, steps, growth, method

    def describe(self) -> dict:
        return {"radius_fn": self.name, "eps_max": self.eps_max, "steps": self.steps,
                "method": self.method}

    def radii(self, model, points, label, logits=None, target=None) -> torch.Tensor:
        if logits is None:
            with torch.no_grad():
                logits = model(points)
        spec = margin_spec(label, logits.shape[1], dtype=points.dtype).to(points.device)
        try:
            start = GlobalLipschitzRadius().radii(model, points, label, logits=logits)
        except UnsupportedModelError:
            start = torch.zeros(points.shape[0], dtype=torch.float64)

        def proved(p, eps):
            lo, _ = output_bounds(model, p, eps, norm=2, spec=spec, method=self.method)
            return bool((torch.as_tensor(lo) > 0).all())

        out = torch.full((points.shape[0],), -1.0, dtype=torch.float64)
        margins = _margins(logits, label).min(dim=1).values.cpu()
        for i in range(points.shape[0]):
            if float(margins[i]) <= 0:
                continue
            lo = max(float(start[i]), 0.0)
            if target is not None:
                if lo >= target:
                    out[i] = lo
                else:
                    out[i] = float(target) if proved(points[i], float(target)) else lo
                continue
            hi = self.growth * lo if lo > 0 else self.eps_max
            if proved(points[i], hi):
                out[i] = hi
                continue
            for _ in range(self.steps):
                mid = 0.5 * (lo + hi)
                if proved(points[i], mid):
                    lo = mid
                else:
                    hi = mid
            out[i] = lo
        return out


RADIUS_FNS = {
    "global-lipschitz": GlobalLipschitzRadius,
    "local-lipschitz": LocalLipschitzRadius,
    "output-bounds": OutputBoundsRadius,
}


def default_radius_fn(model) -> LocalRadius:
    """``OutputBoundsRadius`` (lipbound's CROWN output bounds)."""
    return OutputBoundsRadius()


def resolve_radius_fn(spec, model) -> LocalRadius:
    """A radius function from ``None``/``"auto"`` (default), a name of ``RADIUS_FNS``, a
    ``LocalRadius`` or a plain callable."""
    if spec is None or spec == "auto":
        return default_radius_fn(model)
    if isinstance(spec, str):
        if spec not in RADIUS_FNS:
            raise InputError(
                f"unknown radius function {spec!r}; choose from auto, {', '.join(RADIUS_FNS)} "
                "or pass a callable"
            )
        return RADIUS_FNS[spec]()
    return as_radius_fn(spec)
