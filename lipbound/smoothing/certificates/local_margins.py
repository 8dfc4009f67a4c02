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

Cost. The default radius function (``EngineRadius``, name ``"output-bounds"``; it needs a model
lipbound can trace, see ``check``) bounds many points in one batched CROWN propagation and is
called only where it can change the count: on samples predicted A whose certified
global-Lipschitz radius is below R and where no attack point closer than R changes the class.
Before any bound is computed, the plan scores R with upper bounds of the selection radii,
cheapest first: the bisection ceilings (``growth`` times the global-Lipschitz radius, from the
logits alone), then the attack distances (upper bounds of every certified radius): if even
that optimistic prediction does not beat Cohen's radius (or ``rival``, the best other
certificate of ``best``), R = 0 and nothing more is computed; the plan says
whether R > 0 pays (``details["pays"]``, ``details["why"]``), and ``best`` skips this
certificate where it does not, unless it was asked for explicitly.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from lipbound.errors import InputError, UnsupportedModelError
from lipbound.smoothing.bounds import clopper_pearson_lower, norm_ppf
from lipbound.smoothing.certificates.base import (
    Certificate,
    Certification,
    Context,
    Plan,
    abstain,
    shave,
)
from lipbound.smoothing.certificates.cohen import predicted_cohen_radius
from lipbound.smoothing.local_radius import (
    GlobalLipschitzRadius,
    LocalLipschitzRadius,
    OutputBoundsRadius,
    resolve_radius_fn,
)
from lipbound.smoothing.sampling import Consumer, CountConsumer, Samples

_SHRINK = 0.2  # level of the lower bound used to shrink selection shares (planning only)


@functools.lru_cache(maxsize=8192)
def _predicted_spread(k0: int, m0: int, m: int, alpha: float) -> float | None:
    """``Phi^-1(q_low)`` expected from ``m`` samples when ``k0`` of ``m0`` selection samples
    qualify (shares shrunk, see ``LocalMargins._predict``); None where q_low < 1/2. Planning
    only (memoised: the same counts recur across candidates R and inputs)."""
    frac = clopper_pearson_lower(k0, m0, _SHRINK) if k0 > 0 else 0.0
    k = int(np.clip(np.floor(frac * m), 0, m))
    q_low = clopper_pearson_lower(k, m, alpha)
    if q_low < 0.5:
        return None
    return float(norm_ppf(q_low))


def margins_radius(k: int, m: int, big_r: float, alpha: float, sigma: float) -> tuple[float, float]:
    """``(q_low, radius)`` from ``k`` of ``m`` samples with ``f = A`` and ``r >= R``; radius < 0
    means abstain."""
    q_low = clopper_pearson_lower(k, m, alpha)
    if q_low < 0.5:
        return q_low, -1.0
    return q_low, max(0.0, shave(big_r + sigma * float(norm_ppf(q_low))))


class LocalCount(Consumer):
    """Counts estimation samples with ``f = A`` and ``r >= R``.

    The radius function sees only samples predicted A, gathered over blocks of ``block``
    consecutive sample indices (one call per block, whatever the batch size: batched bound
    computations may depend on which points share a call, and the count must not depend on
    ``batch_size``). Radius functions that know cheaper answers (``EngineRadius``: the
    global-Lipschitz radius, an attack) use them before any bound call."""

    def __init__(self, model, radius_fn, label: int, big_r: float, limit: int,
                 block: int = 512) -> None:
        self.model, self.radius_fn, self.label, self.big_r = model, radius_fn, label, big_r
        self.limit = limit
        self.block = block
        self.count = 0
        self.seen = 0
        self.calls = 0
        self._pts: list[torch.Tensor] = []
        self._logits: list[torch.Tensor] = []

    def update(self, batch: Samples, count: int) -> None:
        pred = batch.predictions[:count]
        batch.require_finite()  # the radius function sees these values on the host
        pos = 0
        while pos < count:
            block_end = ((batch.start + pos) // self.block + 1) * self.block
            stop = min(count, block_end - batch.start)
            hit = (pred[pos:stop] == self.label).nonzero().flatten() + pos
            if hit.numel():
                self._pts.append(batch.points[hit])
                self._logits.append(batch.logits[hit])
            pos = stop
            if batch.start + stop in (block_end, self.limit):
                self._flush()
        self.seen += count

    def _flush(self) -> None:
        if not self._pts:
            return
        pts, logits = torch.cat(self._pts), torch.cat(self._logits)
        self._pts, self._logits = [], []
        r = self.radius_fn.radii(self.model, pts, self.label, logits=logits, target=self.big_r)
        self.calls += int(pts.shape[0])
        self.count += int((r >= self.big_r).sum())


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
        self._selection_cache: dict = {}

    def radius_fn(self, ctx: Context):
        if self._radius_fn is None:
            if self._spec in (None, "auto", "output-bounds"):
                from lipbound.smoothing.engine import EngineRadius

                self._radius_fn = EngineRadius()
            else:
                self._radius_fn = resolve_radius_fn(self._spec, ctx.model)
        return self._radius_fn

    def check(self, ctx: Context) -> str | None:
        """The radius function's requirement: a model the bound engine can trace, for the
        engine-based radius functions; none for a callable."""
        from lipbound.smoothing import engine

        fn = self.radius_fn(ctx)
        own = getattr(fn, "check", None)
        if own is not None:
            return own(ctx.model, ctx.x)
        if isinstance(fn, (LocalLipschitzRadius, OutputBoundsRadius)):
            return engine.model_support(ctx.model, ctx.x)
        if isinstance(fn, GlobalLipschitzRadius) and fn.pair_constants is None:
            try:
                with torch.no_grad():
                    fn.radii(ctx.model, ctx.x.unsqueeze(0), 0)
            except engine.ENGINE_ERRORS as exc:
                return engine.describe_engine_error(exc)
        return None

    def _selection_radii(self, ctx: Context, selection: Samples, label: int, n0_local: int,
                         kind: str) -> np.ndarray:
        """Radii (``kind="radii"``) or upper bounds of the radii (``"ceiling"``: from the
        logits; ``"upper"``: with attacks) of the first
        ``n0_local`` selection samples (``-inf`` where not predicted ``label``); cached."""
        key = (id(selection), label, n0_local, kind)
        if key in self._selection_cache:
            return self._selection_cache[key]
        fn = self.radius_fn(ctx)
        pred = selection.predictions
        hit = (pred[:n0_local] == label).nonzero().flatten()
        radii = np.full(n0_local, -np.inf)
        if hit.numel():
            pts = selection.points[:n0_local][hit]
            logits = selection.logits[:n0_local][hit]
            if kind in ("upper", "ceiling"):
                r = getattr(fn, f"{kind}_radii")(ctx.model, pts, label, logits=logits)
            else:
                r = fn.radii(ctx.model, pts, label, logits=logits)
            radii[hit.cpu().numpy()] = torch.as_tensor(r).double().cpu().numpy()
        self._selection_cache[key] = radii
        return radii

    def _choose(self, radii: np.ndarray, counts, label: int, n0_local: int, n_local: int,
                alpha: float, ctx: Context) -> tuple[float, float]:
        """(R, predicted radius) maximising the prediction: R = 0 (Cohen on all n samples) or
        one of the positive selection radii (on the first ``n_local`` samples). R = 0 is
        scored as ``cohen`` scores itself (the selection vote share as is), the R > 0
        candidates with shrunk shares: R > 0 must win clearly (it costs bound calls, and the
        maximum over many R favours lucky selection shares)."""
        best_r = 0.0
        best_score = self._cohen_score(counts, label, alpha, ctx)
        for big_r in np.unique(radii[radii > 0]):
            if not np.isfinite(big_r):
                continue
            k0 = int((radii >= big_r).sum())
            score = self._predict(k0, n0_local, n_local, float(big_r), alpha, ctx)
            if score > best_score:
                best_r, best_score = float(big_r), score
        return best_r, best_score

    def plan(self, ctx: Context, selection: Samples, alpha: float,
             rival: float = -math.inf) -> Plan:
        """``rival``: the radius another certificate is predicted to certify (``best``). R > 0
        pays only if its predicted radius beats both that and Cohen's (R = 0); when even the
        upper bounds of the selection radii (attack distances; no bound call) cannot, no
        bound is computed and R = 0."""
        reason = self.check(ctx)
        if reason is not None:
            raise UnsupportedModelError(f"local-margins needs a base-classifier radius: {reason}")
        fn = self.radius_fn(ctx)
        pred = selection.predictions
        counts = np.bincount(pred.cpu().numpy(), minlength=ctx.num_classes)
        label = int(np.argmax(counts))
        n_local = min(ctx.n, self.n_local or fn.budget or ctx.n)
        n0_local = min(ctx.n0, self.n0_local or getattr(fn, "selection_budget", None) or ctx.n0)
        cohen = self._cohen_score(counts, label, alpha, ctx)
        floor = max(cohen, rival)
        state: dict = {}
        radii = None
        # optimistic scores from upper bounds of the selection radii, cheapest first: the
        # bisection ceilings (logits only), then the attack distances (gradients)
        for kind, what in (("ceiling", "bisection ceilings (growth x global radius)"),
                           ("upper", "attack distances")):
            if not hasattr(fn, f"{kind}_radii"):
                continue
            ups = self._selection_radii(ctx, selection, label, n0_local, kind)
            _, optimistic = self._choose(ups, counts, label, n0_local, n_local, alpha, ctx)
            state[f"optimistic_score_{kind}"] = optimistic
            if not optimistic > floor:
                state["selection_radius_quantiles"] = _quantiles(ups)
                best_r, best_score = 0.0, cohen
                state["pays"] = False
                state["why"] = (f"cannot pay on this input: even the upper bounds of the "
                                f"selection radii ({what}) predict a radius "
                                f"{optimistic:.4g} <= {floor:.4g} (cohen or the best other "
                                f"certificate); no bound was computed")
                break
        if "pays" not in state:
            radii = self._selection_radii(ctx, selection, label, n0_local, "radii")
            best_r, best_score = self._choose(radii, counts, label, n0_local, n_local, alpha,
                                              ctx)
            state["selection_radius_quantiles"] = _quantiles(radii)
            state["pays"] = best_r > 0 and best_score > floor
            if not state["pays"]:
                state["why"] = (f"does not pay on this input: predicted radius "
                                f"{best_score:.4g} <= {floor:.4g} (cohen or the best other "
                                "certificate) on the selection samples")
        if best_r == 0.0:
            consumers: list[Consumer] = [CountConsumer(ctx.num_classes)]
            m = ctx.n
        else:
            consumers = [LocalCount(ctx.model, fn, label, best_r, n_local)]
            m = n_local
        state.update({
            "predicted_radius": best_score,
            "predicted_cohen_radius": cohen,
            "R": best_r,
            "m": m,
            "selection_counts": counts.tolist(),
            "n0_local": n0_local,
            **fn.describe(),
        })
        return Plan(self, label, alpha, consumers, score=best_score, state=state)

    @staticmethod
    def _cohen_score(counts, label: int, alpha: float, ctx: Context) -> float:
        return predicted_cohen_radius(counts[label] / ctx.n0, ctx.n, alpha, ctx.sigma)

    @staticmethod
    def _predict(k0: int, m0: int, m: int, big_r: float, alpha: float, ctx: Context) -> float:
        """Radius expected from ``m`` samples when ``k0`` of ``m0`` selection samples qualify.
        The share is shrunk to its one-sided 80% lower confidence bound: the maximum over many
        candidate R otherwise favours R whose selection share is high by chance."""
        spread = _predicted_spread(int(k0), int(m0), int(m), float(alpha))
        if spread is None:
            return -1.0
        return max(0.0, shave(big_r + ctx.sigma * spread))

    def finish(self, ctx: Context, plan: Plan) -> Certification:
        cons = plan.consumers[0]
        big_r, m = plan.state["R"], plan.state["m"]
        if isinstance(cons, LocalCount):
            cons._flush()
        k = int(cons.counts[plan.label]) if isinstance(cons, CountConsumer) else cons.count
        q_low, radius = margins_radius(k, m, big_r, plan.alpha, ctx.sigma)
        fn = self.radius_fn(ctx)
        details = {
            "label_selected": plan.label,
            "k": k,
            "m": m,
            "q_R_lower": q_low,
            "alpha": plan.alpha,
            "radius_calls": getattr(cons, "calls", 0),
            **(fn.stats() if hasattr(fn, "stats") else {}),
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
