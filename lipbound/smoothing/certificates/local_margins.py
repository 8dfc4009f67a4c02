r"""Local Lipschitz margins combined with Monte-Carlo sampling.

For a noise draw ``z`` let ``r(x + z)`` be a certified l2 radius of the *base* classifier at
``x + z`` for class A (``local_radius.py``). With the same noise at ``x`` and ``x + d``:
if ``f(x + z) = A`` and ``r(x + z) >= R >= ||d||`` then ``f(x + d + z) = A``. Hence, for every
``||d|| <= R``,

    p_A(x + d) = P[f(x + d + Z) = A] >= q(R) = P[f(x + Z) = A and r(x + Z) >= R].

A one-sided ``(1 - alpha)`` Clopper–Pearson lower bound ``q_low`` of ``q(R)`` holds for all such
``d`` at once. Because ``Phi^-1(p_A(.))`` is ``1/sigma``-Lipschitz (Salman et al. 2019), a point
``x + delta`` with ``||delta|| <= R + e`` is reached as ``(x + d) + e'`` with ``||d|| <= R``,
``||e'|| <= e``, and keeps ``p_A > 1/2`` while ``e < sigma Phi^-1(q_low)``. The certified radius is

    R + sigma Phi^-1(q_low)      (abstain when q_low < 1/2),

which is Cohen's certificate for ``R = 0`` and the bare ``R`` of DESIGN section 4 plus a bonus.

Choices and alpha. On the n0 selection samples: the class A (most votes) and R, maximising the
radius predicted from the selection samples (candidates: 0 and the selection samples' radii;
shares shrunk to an 80% lower confidence bound against the winner's curse).
All of alpha goes to the single bound on ``q(R)``. For R > 0 the count uses the first ``n_local``
estimation samples (radius calls can be costly; default: the radius function's ``budget`` or
n); for R = 0 it uses all n samples and no radius calls.
"""

from __future__ import annotations

import numpy as np

from lipbound.errors import InputError
from lipbound.smoothing.bounds import clopper_pearson_lower, norm_ppf
from lipbound.smoothing.certificates.base import (
    Certificate,
    Certification,
    Context,
    Plan,
    abstain,
    shave,
)
from lipbound.smoothing.local_radius import resolve_radius_fn
from lipbound.smoothing.sampling import Consumer, CountConsumer, Samples

_SHRINK = 0.2  # level of the lower bound used to shrink selection shares (planning only)


def margins_radius(k: int, m: int, big_r: float, alpha: float, sigma: float) -> tuple[float, float]:
    """``(q_low, radius)`` from ``k`` of ``m`` samples with ``f = A`` and ``r >= R``; radius < 0
    means abstain."""
    q_low = clopper_pearson_lower(k, m, alpha)
    if q_low < 0.5:
        return q_low, -1.0
    return q_low, max(0.0, shave(big_r + sigma * float(norm_ppf(q_low))))


class LocalCount(Consumer):
    """Counts estimation samples with ``f = A`` and ``r >= R`` (radius function called only on
    samples predicted A)."""

    def __init__(self, model, radius_fn, label: int, big_r: float, limit: int) -> None:
        self.model, self.radius_fn, self.label, self.big_r = model, radius_fn, label, big_r
        self.limit = limit
        self.count = 0
        self.seen = 0
        self.calls = 0

    def update(self, batch: Samples, count: int) -> None:
        pred = batch.predictions[:count]
        batch.require_finite()  # the radius function sees these values on the host
        hit = (pred == self.label).nonzero().flatten()
        if hit.numel():
            pts = batch.points[:count][hit]
            logits = batch.logits[:count][hit]
            r = self.radius_fn.radii(self.model, pts, self.label, logits=logits, target=self.big_r)
            self.calls += int(hit.numel())
            self.count += int((r >= self.big_r).sum())
        self.seen += count


class LocalMargins(Certificate):
    """Monte-Carlo bound on the mass of noise draws whose base radius is at least R."""

    name = "local-margins"

    def __init__(self, radius_fn=None, n_local: int | None = None, n0_local: int | None = None):
        if not (radius_fn is None or isinstance(radius_fn, str) or callable(radius_fn)
                or hasattr(radius_fn, "radii")):
            raise InputError("local-margins: radius_fn must be a name, a LocalRadius or a callable")
        self._spec = radius_fn
        self._radius_fn = None
        for nm, v in (("n_local", n_local), ("n0_local", n0_local)):
            if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
                raise InputError(f"local-margins: {nm} must be a positive integer, got {v!r}")
        self.n_local = n_local
        self.n0_local = n0_local

    def radius_fn(self, ctx: Context):
        if self._radius_fn is None:
            self._radius_fn = resolve_radius_fn(self._spec, ctx.model)
        return self._radius_fn

    def plan(self, ctx: Context, selection: Samples, alpha: float) -> Plan:
        fn = self.radius_fn(ctx)
        pred = selection.predictions
        counts = np.bincount(pred.cpu().numpy(), minlength=ctx.num_classes)
        label = int(np.argmax(counts))
        n_local = min(ctx.n, self.n_local or fn.budget or ctx.n)
        n0_local = min(ctx.n0, self.n0_local or getattr(fn, "selection_budget", None) or ctx.n0)
        # radii of the selection samples predicted `label`
        hit = (pred[:n0_local] == label).nonzero().flatten()
        radii = np.full(n0_local, -np.inf)
        if hit.numel():
            r = fn.radii(
                ctx.model,
                selection.points[:n0_local][hit],
                label,
                logits=selection.logits[:n0_local][hit],
            )
            radii[hit.cpu().numpy()] = r.numpy()
        # candidate R: 0 (Cohen, all n samples) and each positive selection radius
        best_r, best_score = 0.0, self._predict(counts[label], ctx.n0, ctx.n, 0.0, alpha, ctx)
        for big_r in np.unique(radii[radii > 0]):
            k0 = int((radii >= big_r).sum())
            score = self._predict(k0, n0_local, n_local, float(big_r), alpha, ctx)
            if score > best_score:
                best_r, best_score = float(big_r), score
        if best_r == 0.0:
            consumers: list[Consumer] = [CountConsumer(ctx.num_classes)]
            m = ctx.n
        else:
            consumers = [LocalCount(ctx.model, fn, label, best_r, n_local)]
            m = n_local
        state = {
            "R": best_r,
            "m": m,
            "selection_counts": counts.tolist(),
            "n0_local": n0_local,
            "selection_radius_quantiles": _quantiles(radii),
            **fn.describe(),
        }
        return Plan(self, label, alpha, consumers, score=best_score, state=state)

    @staticmethod
    def _predict(k0: int, m0: int, m: int, big_r: float, alpha: float, ctx: Context) -> float:
        """Radius expected from ``m`` samples when ``k0`` of ``m0`` selection samples qualify.
        The share is shrunk to its one-sided 80% lower confidence bound: the maximum over many
        candidate R otherwise favours R whose selection share is high by chance."""
        frac = clopper_pearson_lower(int(k0), m0, _SHRINK) if k0 > 0 else 0.0
        k = int(np.clip(np.floor(frac * m), 0, m))
        return margins_radius(k, m, big_r, alpha, ctx.sigma)[1]

    def finish(self, ctx: Context, plan: Plan) -> Certification:
        cons = plan.consumers[0]
        big_r, m = plan.state["R"], plan.state["m"]
        k = int(cons.counts[plan.label]) if isinstance(cons, CountConsumer) else cons.count
        q_low, radius = margins_radius(k, m, big_r, plan.alpha, ctx.sigma)
        details = {
            "label_selected": plan.label,
            "k": k,
            "m": m,
            "q_R_lower": q_low,
            "alpha": plan.alpha,
            "radius_calls": getattr(cons, "calls", 0),
            **plan.state,
        }
        if radius < 0:
            return abstain(self.name, details)
        return Certification(plan.label, radius, self.name, details)


def _quantiles(radii: np.ndarray) -> dict:
    finite = radii[np.isfinite(radii)]
    if finite.size == 0:
        return {}
    qs = np.quantile(finite, [0.1, 0.5, 0.9])
    return {"q10": float(qs[0]), "q50": float(qs[1]), "q90": float(qs[2]),
            "count": int(finite.size)}


__all__ = ["LocalMargins", "margins_radius"]
