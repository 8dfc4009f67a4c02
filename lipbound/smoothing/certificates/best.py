"""Several certificates on one input.

``mode="union"`` (default): every candidate makes its own choices on the n0 selection samples,
all of them share the n estimation samples, candidate i gets ``alpha_i = w_i alpha`` with
``sum_i w_i = 1`` (equal weights unless ``weights=`` is given), and the largest certified radius
is reported. By the union bound all candidates' statements hold together with probability
``>= 1 - alpha``, so the reported one does too, whichever wins.

``mode="select"``: the candidate with the largest radius predicted on the n0 selection samples
(each candidate's ``plan.score`` computed at the full alpha) is the only one certified, with all
of alpha. Sound because the choice never looks at the estimation samples.

Which candidates run. A candidate whose ``check`` fails on the model (``local-margins`` or
``lipschitz`` without a constant on a model the bound engine cannot trace; ``dual`` without a
DRS pair) is skipped, with the reason in ``details["skipped"]``; forward-only certificates run
on any classifier. ``optional`` candidates (by default ``local-margins`` when the candidates
were not listed explicitly) are planned after the others and skipped, with the reason, when
their plan on the selection samples says they do not pay against the best other candidate.
The weights are then renormalised over the candidates that run and those are planned again:
every decision uses the model and the selection samples only, so the union bound holds.

Each candidate certifies its own smoothed classifier (hard votes for cohen, local-margins and
dual; soft scores for lvm and lipschitz); ``details["winner"]`` names the one reported.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np

from lipbound.errors import InputError, UnsupportedModelError
from lipbound.smoothing.certificates.base import (
    Certificate,
    Certification,
    Context,
    Plan,
    abstain,
)
from lipbound.smoothing.sampling import Samples


class Best(Certificate):
    """Union-bound (or selected) combination of certificates; reports which won and which
    were skipped."""

    name = "best"

    def __init__(
        self,
        candidates: Sequence[Certificate],
        weights: Sequence[float] | None = None,
        mode: str = "union",
        optional: Sequence[str] = (),
    ) -> None:
        if not candidates:
            raise InputError("best: no candidate certificates")
        if any(isinstance(c, Best) for c in candidates):
            raise InputError("best: candidates cannot themselves be 'best'")
        names = [c.name for c in candidates]
        if len(set(names)) != len(names):
            raise InputError(f"best: duplicate candidates {names}")
        if weights is None:
            weights = [1.0] * len(candidates)
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(candidates),) or np.any(w <= 0) or not np.all(np.isfinite(w)):
            raise InputError("best: weights must be positive, one per candidate")
        if mode not in ("union", "select"):
            raise InputError(f"best: mode must be 'union' or 'select', got {mode!r}")
        if isinstance(optional, str):
            optional = (optional,)
        unknown = set(optional) - set(names)
        if unknown:
            raise InputError(f"best: optional names {sorted(unknown)} are not candidates")
        self.candidates = list(candidates)
        self.weights = w / w.sum()
        self.mode = mode
        self.optional = tuple(optional)

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            "candidates": [c.name for c in self.candidates],
            "weights": self.weights.tolist(),
            "optional": list(self.optional),
        }

    # ------------------------------------------------------------------ planning
    def _plan_all(self, ctx: Context, selection: Samples, alpha: float,
                  chosen: list[tuple[Certificate, float]], skipped: dict[str, str]
                  ) -> list[Plan]:
        """Plans of ``chosen`` (candidate, weight); the required ones first, then the optional
        ones against the best required score. Optional ones that do not pay go to
        ``skipped`` and are left out (the caller re-plans the rest)."""
        total = sum(w for _, w in chosen)
        share = (lambda w: alpha * w / total) if self.mode == "union" else (lambda w: alpha)
        plans: list[Plan] = []
        for c, w in chosen:
            if c.name not in self.optional:
                plans.append(c.plan(ctx, selection, share(w)))
        rival = max((p.score for p in plans), default=-np.inf)
        for c, w in chosen:
            if c.name not in self.optional:
                continue
            if "rival" in inspect.signature(c.plan).parameters:
                p = c.plan(ctx, selection, share(w), rival=rival)
            else:  # a certificate without a notion of paying
                p = c.plan(ctx, selection, share(w))
            if p.state.get("pays", True) is False and plans:
                skipped[c.name] = p.state.get("why", "does not pay on this input")
                continue
            plans.append(p)
        order = {c.name: i for i, c in enumerate(self.candidates)}
        return sorted(plans, key=lambda p: order[p.certificate.name])

    def plan(self, ctx: Context, selection: Samples, alpha: float) -> Plan:
        skipped: dict[str, str] = {}
        chosen = []
        for c, w in zip(self.candidates, self.weights):
            reason = c.check(ctx)
            if reason is None:
                chosen.append((c, float(w)))
            else:
                skipped[c.name] = reason
        if not chosen:
            raise UnsupportedModelError(
                "best: no candidate certificate applies to this model: "
                + "; ".join(f"{k}: {v}" for k, v in skipped.items())
            )
        plans = self._plan_all(ctx, selection, alpha, chosen, skipped)
        if len(plans) < len(chosen):  # optional ones dropped: renormalise and plan again
            kept = {p.certificate.name for p in plans}
            rest = [(c, w) for c, w in chosen if c.name in kept]
            plans = self._plan_all(ctx, selection, alpha, rest, skipped)
        state = {"skipped": skipped}
        if self.mode == "union":
            consumers = [cons for p in plans for cons in p.consumers]
            best = int(np.argmax([p.score for p in plans]))
            state["plans"] = plans
            return Plan(self, plans[best].label, alpha, consumers, score=plans[best].score,
                        state=state)
        scores = [p.score for p in plans]
        chosen_i = int(np.argmax(scores))
        state["plans"] = [plans[chosen_i]]
        state["selection_scores"] = {p.certificate.name: s for p, s in zip(plans, scores)}
        return Plan(self, plans[chosen_i].label, alpha, plans[chosen_i].consumers,
                    score=scores[chosen_i], state=state)

    def finish(self, ctx: Context, plan: Plan) -> Certification:
        results = [p.certificate.finish(ctx, p) for p in plan.state["plans"]]
        radii = [r.radius if not r.abstained else -np.inf for r in results]
        win = int(np.argmax(radii))
        details = {
            "mode": self.mode,
            "alpha": plan.alpha,
            "candidates": {
                r.certificate: {
                    "prediction": r.prediction,
                    "radius": r.radius,
                    "alpha": p.alpha,
                    **r.details,
                }
                for r, p in zip(results, plan.state["plans"])
            },
            "skipped": dict(plan.state["skipped"]),
        }
        if self.mode == "select":
            details["selection_scores"] = plan.state["selection_scores"]
        if results[win].abstained:
            details["winner"] = None
            return abstain(self.name, details)
        details["winner"] = results[win].certificate
        return Certification(results[win].prediction, results[win].radius, self.name, details)
