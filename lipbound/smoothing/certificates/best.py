"""Several certificates on one input.

``mode="union"`` (default): every candidate makes its own choices on the n0 selection samples,
all of them share the n estimation samples, candidate i gets ``alpha_i = w_i alpha`` with
``sum_i w_i = 1`` (equal weights unless ``weights=`` is given), and the largest certified radius
is reported. By the union bound all candidates' statements hold together with probability
``>= 1 - alpha``, so the reported one does too, whichever wins.

``mode="select"``: the candidate with the largest radius predicted on the n0 selection samples
(each candidate's ``plan.score`` computed at the full alpha) is the only one certified, with all
of alpha. Sound because the choice never looks at the estimation samples.

Each candidate certifies its own smoothed classifier (hard votes for cohen, local-margins and
dual; soft scores for lvm and lipschitz); ``details["winner"]`` names the one reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lipbound.errors import InputError
from lipbound.smoothing.certificates.base import (
    Certificate,
    Certification,
    Context,
    Plan,
    abstain,
)
from lipbound.smoothing.sampling import Samples


class Best(Certificate):
    """Union-bound (or selected) combination of certificates; reports which won."""

    name = "best"

    def __init__(
        self,
        candidates: Sequence[Certificate],
        weights: Sequence[float] | None = None,
        mode: str = "union",
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
        self.candidates = list(candidates)
        self.weights = w / w.sum()
        self.mode = mode

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            "candidates": [c.name for c in self.candidates],
            "weights": self.weights.tolist(),
        }

    def plan(self, ctx: Context, selection: Samples, alpha: float) -> Plan:
        if self.mode == "union":
            plans = [
                c.plan(ctx, selection, alpha * w) for c, w in zip(self.candidates, self.weights)
            ]
            consumers = [cons for p in plans for cons in p.consumers]
            best = int(np.argmax([p.score for p in plans]))
            return Plan(self, plans[best].label, alpha, consumers,
                        score=plans[best].score, state={"plans": plans})
        plans = [c.plan(ctx, selection, alpha) for c in self.candidates]
        scores = [p.score for p in plans]
        chosen = int(np.argmax(scores))
        return Plan(self, plans[chosen].label, alpha, plans[chosen].consumers,
                    score=scores[chosen],
                    state={"plans": [plans[chosen]], "selection_scores": scores})

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
        }
        if self.mode == "select":
            details["selection_scores"] = dict(
                zip([c.name for c in self.candidates], plan.state["selection_scores"])
            )
        if results[win].abstained:
            details["winner"] = None
            return abstain(self.name, details)
        details["winner"] = results[win].certificate
        return Certification(results[win].prediction, results[win].radius, self.name, details)
