"""Cohen, Rosenfeld & Kolter (2019) CERTIFY.

Selection: the class ``A`` with the most votes among the ``n0`` selection samples.
Estimation: ``n_A`` votes for ``A`` among ``n`` fresh samples; ``p_A`` is the one-sided
``(1 - alpha)`` Clopper–Pearson lower bound (all of alpha on this single bound). Abstain exactly
when ``p_A < 1/2``; otherwise the radius is ``sigma Phi^-1(p_A)``.
"""

from __future__ import annotations

import numpy as np

from lipbound.smoothing.bounds import binomial_pvalue, clopper_pearson_lower, norm_ppf
from lipbound.smoothing.certificates.base import (
    Certificate,
    Certification,
    Context,
    Plan,
    abstain,
    shave,
)
from lipbound.smoothing.sampling import CountConsumer, Samples


def cohen_radius(n_a: int, n: int, alpha: float, sigma: float) -> tuple[float, float]:
    """``(p_A lower bound, radius)``; radius is negative (abstain) when the bound is below 1/2."""
    p_low = clopper_pearson_lower(n_a, n, alpha)
    if p_low < 0.5:
        return p_low, -1.0
    return p_low, max(0.0, shave(sigma * float(norm_ppf(p_low))))


def predicted_cohen_radius(frac: float, n: int, alpha: float, sigma: float) -> float:
    """Radius expected with ``n`` samples if the vote share were ``frac`` (for planning)."""
    k = int(np.clip(np.floor(frac * n), 0, n))
    return cohen_radius(k, n, alpha, sigma)[1]


def predict_from_counts(counts, alpha: float) -> int:
    """Cohen et al.'s PREDICT decision: the top class, or -1 unless the two-sided binomial test
    of the top two counts ``n_A`` vs ``n_B`` (``n_A + n_B`` trials, p = 1/2) has p <= alpha.
    Ties between counts go to the lower class index."""
    counts = np.asarray(counts)
    order = np.argsort(-counts, kind="stable")
    top, second = int(order[0]), int(order[1])
    n_a, n_b = int(counts[top]), int(counts[second])
    if binomial_pvalue(n_a, n_a + n_b) > alpha:
        return -1
    return top


class Cohen(Certificate):
    """Clopper–Pearson bound on the top class's vote share; radius ``sigma Phi^-1(p_A)``."""

    name = "cohen"

    def plan(self, ctx: Context, selection: Samples, alpha: float) -> Plan:
        counts = np.bincount(selection.predictions.cpu().numpy(), minlength=ctx.num_classes)
        label = int(np.argmax(counts))
        score = predicted_cohen_radius(counts[label] / ctx.n0, ctx.n, alpha, ctx.sigma)
        return Plan(
            self,
            label,
            alpha,
            [CountConsumer(ctx.num_classes)],
            score=score,
            state={"selection_counts": counts.tolist()},
        )

    def finish(self, ctx: Context, plan: Plan) -> Certification:
        counts = plan.consumers[0].counts
        n_a = int(counts[plan.label])
        p_low, radius = cohen_radius(n_a, ctx.n, plan.alpha, ctx.sigma)
        details = {
            "label_selected": plan.label,
            "selection_counts": plan.state["selection_counts"],
            "n_A": n_a,
            "n": ctx.n,
            "p_A_lower": p_low,
            "alpha": plan.alpha,
            "bound": "clopper-pearson",
        }
        if radius < 0:
            return abstain(self.name, details)
        return Certification(plan.label, radius, self.name, details)
