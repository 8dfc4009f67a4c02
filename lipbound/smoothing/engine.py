"""What the smoothing certificates take from lipbound's bound engine, and when they can.

Forward-only certificates (``cohen``, ``lvm``, ``dual``) run any eval-mode classifier. The
ones that need bounds (``local-margins``; ``lipschitz`` without a given constant) need a model
the engine can trace: :func:`model_support` says whether it can, and why not (cached per
model, input shape and parameter versions; ``best`` records the reason and skips them).

For a traceable model this module provides

* :func:`margin_constants`: certified global l2 constants of the logit differences from the
  engine (:func:`lipbound.global_api.margin_lipschitz`, method "fast"), for any traced model;
* :func:`attack_radii`: batched DeepFool distances to a point of another class (each checked
  by a forward pass): *upper* bounds of every certified radius, used to skip bound calls that
  cannot succeed and to bound what ``local-margins`` can gain before paying for bounds;
* :class:`EngineRadius`: the base-classifier radius of ``local-margins`` (name
  ``"output-bounds"``): CROWN output bounds of the margins over l2 balls, one batched
  propagation for many points (``lipbound.api.output_bounds_batch``), called only where the
  cheap global radius does not already reach the target and no attack point refutes it.
"""

from __future__ import annotations

import math
import weakref

import numpy as np
import torch

from lipbound.errors import (
    ShapeError,
    TracingError,
    UnsupportedModelError,
    UnsupportedOperationError,
)
from lipbound.smoothing.local_radius import LocalRadius, _margins
from lipbound.specs import margin_spec

#: errors that mean "the engine cannot handle this model" (not a bug, not bad input)
ENGINE_ERRORS = (UnsupportedOperationError, UnsupportedModelError, TracingError)

_SUPPORT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MARGINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(model: torch.nn.Module, shape: tuple[int, ...]) -> tuple:
    from lipbound.inputs import _fingerprint

    return (shape, _fingerprint(model))


def describe_engine_error(exc: Exception) -> str:
    """A one-line reason (the operator and where it sits, without the list of supported
    operators) for ``details["skipped"]``."""
    if isinstance(exc, UnsupportedOperationError):
        return f"model not traceable: unsupported operator {exc.op!r} at {exc.where}"
    text = str(exc).split(". Supported")[0]
    if isinstance(exc, TracingError):
        return f"model not traceable: {text}"
    return f"model not supported by the bound engine: {text}"


def model_support(model: torch.nn.Module, x: torch.Tensor) -> str | None:
    """None if lipbound's engine can trace and bound ``model`` on inputs shaped like ``x``
    (one input, no batch dimension), else the reason."""
    from lipbound.inputs import get_traced

    sig = _signature(model, tuple(x.shape))
    per = _SUPPORT.setdefault(model, {})
    if sig in per:
        return per[sig]
    try:
        get_traced(model, x.unsqueeze(0), torch.float64, x.device)
        reason = None
    except ENGINE_ERRORS as exc:
        reason = describe_engine_error(exc)
    except ShapeError as exc:
        reason = f"model not traceable: {exc}"
    per[sig] = reason
    return reason


def margin_constants(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray | None:
    """``[K, K]`` certified global l2 constants of ``f_c - f_j`` (engine: the least of the
    naive product and, for chains, ECLipsE-Fast), or None when the engine has no Lipschitz
    fact for some op of the model (cached)."""
    from lipbound.global_api import margin_lipschitz

    sig = _signature(model, tuple(x.shape))
    per = _MARGINS.setdefault(model, {})
    if sig not in per:
        try:
            per[sig] = margin_lipschitz(model, x, norm=2, method="fast").numpy()
        except ENGINE_ERRORS:
            per[sig] = None
    return per[sig]


def global_radii(model, points: torch.Tensor, label: int, logits: torch.Tensor) -> torch.Tensor:
    """``min_j margin_j / L[label, j]`` (float64, on the CPU): a certified l2 radius of every
    point predicted ``label`` (negative where the lowered margin is not positive); zero
    where no global constant exists."""
    m = _margins(logits, label).cpu()
    pairs = margin_constants(model, points[0])
    if pairs is None:
        return torch.where(m.min(dim=1).values > 0, 0.0, -1.0).double()
    lip = torch.as_tensor(np.delete(pairs[label], label), dtype=torch.float64)
    r = (m / lip.clamp(min=1e-300)).min(dim=1).values
    return r


def attack_radii(model, points: torch.Tensor, label: int, steps: int = 8,
                 overshoot: float = 0.02, limit: torch.Tensor | float = math.inf
                 ) -> torch.Tensor:
    """Batched DeepFool: for each point, the l2 norm of a perturbation whose point the model
    classifies other than ``label`` (checked by a forward pass), or ``inf`` if none was found
    within ``steps`` linearised steps (or within ``limit``). Every finite value bounds every
    certified radius of that point from above."""
    m = points.shape[0]
    best = torch.full((m,), math.inf, dtype=torch.float64)
    if m == 0 or steps <= 0:
        return best
    limit_t = torch.as_tensor(limit, dtype=torch.float64).expand(m).clone()
    x0 = points.detach()
    delta = torch.zeros_like(x0)
    active = torch.arange(m, device=x0.device)
    for _ in range(steps + 1):
        if active.numel() == 0:
            break
        p = (x0[active] + delta[active]).detach().requires_grad_(True)
        out = model(p)
        with torch.no_grad():
            flipped = out.argmax(dim=1) != label
            dist = (p - x0[active]).flatten(1).double().norm(dim=1).cpu()
        idx = active[flipped].cpu()
        best[idx] = torch.minimum(best[idx], dist[flipped.cpu()])
        keep = (~flipped).cpu() & (dist < limit_t[active.cpu()])
        if not bool(keep.any()):
            break
        k = out.shape[1]
        others = [j for j in range(k) if j != label]
        marg = out[:, label : label + 1] - out[:, others]  # [a, K-1]
        grads = []
        for c in range(len(others)):
            (g,) = torch.autograd.grad(marg[:, c].sum(), p, retain_graph=c < len(others) - 1)
            grads.append(g.flatten(1))
        with torch.no_grad():
            gr = torch.stack(grads, 1)  # [a, K-1, d]
            gn = gr.norm(dim=2).clamp(min=1e-12)
            ratio = marg.detach() / gn
            j = ratio.argmin(dim=1)
            rows = torch.arange(gr.shape[0], device=gr.device)
            step = -(ratio[rows, j] / gn[rows, j]).unsqueeze(1) * gr[rows, j] * (1 + overshoot)
            delta[active] = delta[active] + step.reshape(delta[active].shape)
        active = active[keep.to(active.device)]
    return best


class EngineRadius(LocalRadius):
    """Certified l2 radii from lipbound's batched CROWN output bounds of the margins.

    ``radii(..., target=R)``: ``R`` where the bounds prove every margin positive on the ball
    of radius R, else the global-Lipschitz radius; the bound call is made only for points
    predicted ``label`` whose global radius is below R and where no attack point closer than
    R changes the class (neither call could change whether the point counts). Without a
    target: bisection (``steps`` batched calls) between the global radius and
    ``min(attack distance, growth * global radius or eps_max)``. Points go to the engine in
    chunks of ``chunk``.
    """

    name = "output-bounds"
    budget = 1000
    selection_budget = 50

    def __init__(self, eps_max: float = 2.0, steps: int = 5, growth: float = 4.0,
                 method: str = "crown", chunk: int = 256, attack_steps: int = 8) -> None:
        self.eps_max, self.steps, self.growth, self.method = eps_max, steps, growth, method
        self.chunk, self.attack_steps = chunk, attack_steps
        self.calls = 0  # points sent to the engine (all propagations)
        self.skipped_global = 0
        self.skipped_attack = 0

    def describe(self) -> dict:
        return {"radius_fn": self.name, "eps_max": self.eps_max, "steps": self.steps,
                "method": self.method, "batched": True}

    def check(self, model, x) -> str | None:
        return model_support(model, x)

    def stats(self) -> dict:
        return {"bound_points": self.calls, "counted_by_global_radius": self.skipped_global,
                "refuted_by_attack": self.skipped_attack}

    # ------------------------------------------------------------------ pieces
    def _proved(self, model, points, eps, label) -> torch.Tensor:
        """[m] bool: CROWN proves every margin of ``label`` positive on the l2 balls."""
        from lipbound.api import output_bounds_batch

        out = torch.zeros(points.shape[0], dtype=torch.bool)
        if points.shape[0] == 0:
            return out
        k = None
        for lo in range(0, points.shape[0], self.chunk):
            pts = points[lo : lo + self.chunk]
            if k is None:
                with torch.no_grad():
                    k = model(pts[:1]).shape[1]
            spec = margin_spec(label, k, dtype=torch.float64).to(pts.device)
            e = eps[lo : lo + self.chunk].to(torch.float64)
            lower, _ = output_bounds_batch(model, pts, e.to(pts.device), norm=2, spec=spec,
                                           method=self.method)
            out[lo : lo + pts.shape[0]] = (lower > 0).all(dim=1).cpu()
            self.calls += int(pts.shape[0])
        return out

    def ceiling_radii(self, model, points, label, logits=None) -> torch.Tensor:
        """Upper bounds of the radii the bisection can return, from the logits alone (no
        gradient, no bound): ``growth`` times the global radius (``eps_max`` where that is 0);
        negative where the lowered margin is not positive."""
        if logits is None:
            with torch.no_grad():
                logits = model(points)
        g = global_radii(model, points, label, logits)
        ceiling = torch.where(g > 0, torch.clamp(g * self.growth, min=0.0),
                              torch.full_like(g, self.eps_max))
        return torch.where(g < 0, g, torch.maximum(ceiling, g))

    def upper_radii(self, model, points, label, logits=None) -> torch.Tensor:
        """Upper bounds of the radii this function can return: the attack distance, and the
        bisection's ceiling (:meth:`ceiling_radii`)."""
        if logits is None:
            with torch.no_grad():
                logits = model(points)
        g = global_radii(model, points, label, logits)
        ceiling = self.ceiling_radii(model, points, label, logits)
        a = attack_radii(model, points, label, self.attack_steps, limit=ceiling.clamp(min=0.0))
        return torch.where(g < 0, g, torch.maximum(torch.minimum(a, ceiling), g))

    # ------------------------------------------------------------------ the contract
    def radii(self, model, points, label, logits=None, target=None) -> torch.Tensor:
        if logits is None:
            with torch.no_grad():
                logits = model(points)
        g = global_radii(model, points, label, logits)
        out = g.clone()
        live = g >= 0  # margin positive
        if target is not None:
            target = float(target)
            done = live & (g >= target)
            self.skipped_global += int(done.sum())
            todo = (live & ~done).nonzero().flatten()
            if todo.numel() == 0:
                return out
            a = attack_radii(model, points[todo], label, self.attack_steps,
                             limit=torch.full((todo.numel(),), target, dtype=torch.float64))
            refuted = a < target
            self.skipped_attack += int(refuted.sum())
            todo = todo[~refuted]
            eps = torch.full((todo.numel(),), target, dtype=torch.float64)
            ok = self._proved(model, points[todo], eps, label)
            out[todo[ok]] = target
            return out
        idx = live.nonzero().flatten()
        if idx.numel() == 0:
            return out
        up = self.upper_radii(model, points[idx], label, logits[idx])
        lo = g[idx].clamp(min=0.0)
        hi = torch.maximum(up, lo)
        # the ceiling first: proved there means no search
        wide = (hi > lo * (1 + 1e-6) + 1e-12).nonzero().flatten()  # else nothing to gain
        ok = torch.zeros_like(lo, dtype=torch.bool)
        ok[wide] = self._proved(model, points[idx[wide]], hi[wide], label)
        lo = torch.where(ok, hi, lo)
        open_ = ~ok & (hi > lo * (1 + 1e-6) + 1e-12)
        for _ in range(self.steps):
            sel = open_.nonzero().flatten()
            if sel.numel() == 0:
                break
            mid = 0.5 * (lo[sel] + hi[sel])
            good = self._proved(model, points[idx[sel]], mid, label)
            lo[sel] = torch.where(good, mid, lo[sel])
            hi[sel] = torch.where(good, hi[sel], mid)
        out[idx] = torch.maximum(lo, g[idx])
        return out


__all__ = ["ENGINE_ERRORS", "EngineRadius", "attack_radii", "describe_engine_error",
           "global_radii", "margin_constants", "model_support"]
