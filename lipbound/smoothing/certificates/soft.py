"""Shared machinery of the soft-classifier certificates (``lvm`` and ``lipschitz``).

The smoothed classifier is ``argmax_c H_c(x)``, ``H_c(x) = E s_t(f(x + Z))_c`` with a simplex map
``s`` at inverse temperature ``t``. For every class ``c``, ``psi_c(H_c)`` is 1-Lipschitz in x, where
``psi`` is ``sigma Phi^-1`` (any [0, 1]-valued base, Salman et al. 2019) or the value-dependent
``psi_L`` of ``lipschitz_radius`` when ``s_t(f(.))_c`` is L-Lipschitz. With bounds
``H_A(x) >= p_A`` and ``H_B(x) <= p_B`` for every ``B != A`` (``p_B <= 1 - p_A`` since the outputs
sum to 1), the radius

    max( psi_{L_A}(p_A),  min_B (psi_{L_AB}(p_A) - psi_{L_AB}(p_B)) / 2 ),  L_AB = max(L_A, L_B)

is certified: the first term keeps ``H_A > 1/2``, the second keeps ``H_A > H_B`` for each B.

Bounds and alpha. One lower bound (class A) and K - 1 upper bounds, each one-sided at
``alpha / K`` (Bonferroni over the K bounds). Empirical Bernstein (Maurer–Pontil) for continuous
maps; Clopper–Pearson for hardmax, whose outputs are one-hot.

Choice of map and temperature. ``selection="n0"`` (default): every candidate of the grid is
scored on the n0 selection samples (the radius it would certify if the n-sample mean and
standard deviation equalled those of the selection samples), the best is fixed, then certified
on the n estimation samples with all of alpha. ``selection="split"``: every candidate is
certified on the estimation samples at ``alpha / G`` (G candidates, union bound) and the largest
radius is reported. Never the same samples for choosing and certifying without a split.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from lipbound.errors import InputError
from lipbound.smoothing.bounds import (
    clopper_pearson_lower,
    clopper_pearson_upper,
    empirical_bernstein_bounds,
)
from lipbound.smoothing.certificates.base import (
    Certificate,
    Certification,
    Context,
    Plan,
    abstain,
    shave,
)
from lipbound.smoothing.lipschitz_radius import psi
from lipbound.smoothing.sampling import Consumer, FixedPointSum, Samples
from lipbound.smoothing.simplex import MAPS, apply_map, is_binary

DEFAULT_TEMPERATURES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
_SUM_SLACK = 1e-5


def soft_outputs(name: str, logits: torch.Tensor, t: float,
                 violations: list[torch.Tensor] | None = None) -> torch.Tensor:
    """``s_t(logits)`` in [0, 1]. Map "identity" needs outputs in the probability simplex: a
    violation raises ``InputError`` now, or, with ``violations`` given, is appended to it as a
    flag on the device (no host synchronisation; see :func:`raise_if_not_simplex`)."""
    out = apply_map(name, logits, t)
    if name == "identity":
        bad = ((out < -1e-6) | (out > 1 + 1e-6)).any() | (out.sum(dim=1) > 1 + _SUM_SLACK).any()
        if violations is None:
            raise_if_not_simplex([bad])
        else:
            violations.append(bad)
        out = out.clamp(0.0, 1.0)
    return out


def raise_if_not_simplex(violations: Sequence[torch.Tensor]) -> None:
    """Raise ``InputError`` if any flag of :func:`soft_outputs` is set (one host read)."""
    if violations and bool(torch.stack(list(violations)).any()):
        raise InputError(
            "map 'identity' needs model outputs in the probability simplex (each in [0, 1], "
            "summing to at most 1)"
        )


class SoftStats(Consumer):
    """Exact fixed-point sums per class of the soft outputs ``s_t(f(x + z_i))`` and of their
    squares (``FixedPointSum``: batch-size independent, on the device)."""

    def __init__(self, num_classes: int, map_name: str, t: float, total: int) -> None:
        self.map_name, self.t = map_name, t
        self.s1 = FixedPointSum(num_classes, total)
        self.s2 = FixedPointSum(num_classes, total)
        self.seen = 0
        self._violations: list[torch.Tensor] = []  # simplex checks, read once at the end

    def update(self, batch: Samples, count: int) -> None:
        s = soft_outputs(self.map_name, batch.logits[:count], self.t, self._violations)
        if len(self._violations) > 1:  # keep one flag
            self._violations[:] = [torch.stack(self._violations).any()]
        self.s1.add(s)
        self.s2.add(s * s)
        self.seen += count

    def moments(self) -> Moments:
        raise_if_not_simplex(self._violations)
        return fixed_point_moments(self.s1.result(), self.s2.result(), self.seen, self.s1.bits)


@dataclasses.dataclass
class Moments:
    """Per-class sample means and standard deviations of ``n`` soft outputs in [0, 1].

    ``slack``: a bound on how far ``mean`` may be from the exact mean of the float outputs
    (fixed-point rounding); ``std`` is already rounded up to cover its own rounding."""

    mean: np.ndarray
    std: np.ndarray
    n: int
    slack: float = 0.0


def moments_from_sums(s1: np.ndarray, s2: np.ndarray, n: int) -> Moments:
    """Means and unbiased standard deviations from float sums (planning on the selection
    samples only: no rounding allowance)."""
    mean = s1 / n
    if n < 2:
        return Moments(mean, np.full_like(mean, np.inf), n)
    var = np.maximum(s2 - s1 * s1 / n, 0.0) / (n - 1)
    return Moments(mean, np.sqrt(var), n)


def fixed_point_moments(s1: list[int], s2: list[int], n: int, bits: int) -> Moments:
    """Moments from exact integer sums of values rounded to multiples of ``2^-bits``.

    With ``d = 2^-(bits+1)`` the largest rounding of one value (and ``d + 2^-53`` of one square),
    the mean moves by at most ``d`` and the unbiased variance by at most
    ``n/(n-1) (3d + 2^-53 + d^2) <= 2 (3d + 2^-52)``; both are added outward. The variance
    numerator ``n S2 - S1^2`` is computed in exact integer arithmetic."""
    d = 2.0 ** -(bits + 1)
    scale = 1 << bits
    mean = np.array([v / (scale * n) for v in s1], dtype=np.float64)
    if n < 2:
        return Moments(mean, np.full_like(mean, np.inf), n, slack=d + 1e-15)
    num = [max(n * b * scale - a * a, 0) for a, b in zip(s1, s2)]  # n(n-1) var * 4^bits
    var = np.array([v / (scale * scale * n * (n - 1)) for v in num], dtype=np.float64)
    std = np.sqrt(var + 2 * (3 * d + 2.0**-52)) * (1 + 1e-15)
    return Moments(mean, std, n, slack=d + 1e-15)


def class_bounds(
    map_name: str, mom: Moments, label: int, alpha_each: float
) -> tuple[float, np.ndarray]:
    """Lower bound of class ``label`` and upper bounds of the others (each at ``alpha_each``)."""
    n = mom.n
    if is_binary(map_name):
        counts = np.rint(mom.mean * n).astype(np.int64)  # one-hot outputs: exact counts
        low = clopper_pearson_lower(int(counts[label]), n, alpha_each)
        up = np.array([clopper_pearson_upper(int(k), n, alpha_each) for k in counts])
    else:
        lows, up = empirical_bernstein_bounds(mom.mean, mom.std, n, alpha_each, mom.slack)
        low = float(lows[label])
    up = np.delete(up, label)
    # H_B <= 1 - H_A <= 1 - low: the soft outputs sum to 1 (identity maps: checked to within
    # _SUM_SLACK)
    return low, np.minimum(up, 1.0 - low + _SUM_SLACK)


def pair_radius(
    p_a: np.ndarray, p_b: np.ndarray, l_a: np.ndarray, l_b: np.ndarray, sigma: float
) -> np.ndarray:
    """Vectorised radius over G candidates: ``p_a``, ``l_a`` [G]; ``p_b``, ``l_b`` [G, K-1]."""
    g, k1 = p_b.shape
    # a constant of 0 (constant outputs) is also a constant of 1e-12
    l_a, l_b = np.maximum(l_a, 1e-12), np.maximum(l_b, 1e-12)
    l_ab = np.maximum(l_a[:, None], l_b)
    pa_b = np.broadcast_to(p_a[:, None], p_b.shape)
    # one call for all lower bounds (single-class terms and the A side of the pairs)
    lows = psi(np.concatenate([p_a, pa_b.ravel()]), np.concatenate([l_a, l_ab.ravel()]),
               sigma, lower=True)
    single, pair_a = lows[:g], lows[g:].reshape(g, k1)
    pair = (pair_a - psi(p_b, l_ab, sigma, lower=False)) / 2
    pair = pair.min(axis=1) if k1 else np.full_like(single, np.inf)
    return np.maximum(single, pair)


class SoftCertificate(Certificate):
    """Base of ``lvm`` and ``lipschitz``: a grid of (map, temperature) candidates."""

    name = "soft"
    allowed_maps: tuple[str, ...] = MAPS

    def __init__(
        self,
        maps: Sequence[str] = ("softmax", "sparsemax", "hardmax"),
        temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
        selection: str = "n0",
        grid: Sequence[tuple[str, float]] | None = None,
    ) -> None:
        if grid is None:
            if isinstance(maps, str):
                maps = (maps,)
            if isinstance(temperatures, (int, float)):
                temperatures = (temperatures,)
            grid = []
            for m in maps:
                ts = (1.0,) if m in ("hardmax", "identity") else temperatures
                grid.extend((m, float(t)) for t in ts)
        grid = [(str(m), float(t)) for m, t in grid]
        if not grid:
            raise InputError(f"{self.name}: the candidate grid is empty")
        for m, t in grid:
            if m not in self.allowed_maps:
                raise InputError(
                    f"{self.name}: unknown or unsupported map {m!r}; "
                    f"choose from {', '.join(self.allowed_maps)}"
                )
            if not (t > 0 and math.isfinite(t)):
                raise InputError(f"{self.name}: temperatures must be positive, got {t}")
        if selection not in ("n0", "split"):
            raise InputError(f"{self.name}: selection must be 'n0' or 'split', got {selection!r}")
        self.grid = grid
        self.selection = selection

    # -- hooks for subclasses -------------------------------------------------------------
    def class_constants(self, ctx: Context, map_name: str, t: float) -> np.ndarray:
        """Per-class l2 Lipschitz constants of ``s_t(f)_c`` ([K]; ``inf`` = no constant)."""
        return np.full(ctx.num_classes, np.inf)

    def prepare(self, ctx: Context) -> dict:
        """Per-certification setup (e.g. computing Lipschitz constants); returns details."""
        return {}

    # -------------------------------------------------------------------------------------
    def _radii(
        self, ctx: Context, cands: list[int], stats: list, alpha_each: float, labels
    ) -> tuple[np.ndarray, list[dict]]:
        p_a, p_b, l_a, l_b, infos = [], [], [], [], []
        for g, mom, label in zip(cands, stats, labels):
            m, t = self.grid[g]
            low, up = class_bounds(m, mom, label, alpha_each)
            consts = self.class_constants(ctx, m, t)
            p_a.append(low)
            p_b.append(up)
            l_a.append(consts[label])
            l_b.append(np.delete(consts, label))
            infos.append(
                {
                    "map": m,
                    "t": t,
                    "label": int(label),
                    "p_A_lower": low,
                    "p_B_upper_max": float(up.max()) if up.size else 0.0,
                    "lipschitz": float(consts[label]),
                }
            )
        radii = pair_radius(
            np.array(p_a), np.array(p_b), np.array(l_a, dtype=float), np.array(l_b), ctx.sigma
        )
        return radii, infos

    def plan(self, ctx: Context, selection: Samples, alpha: float) -> Plan:
        setup = self.prepare(ctx)
        k = ctx.num_classes
        n_cand = len(self.grid)
        alpha_cand = alpha if self.selection == "n0" else alpha / n_cand
        labels, stats = [], []
        for m, t in self.grid:
            s = soft_outputs(m, selection.logits, t)
            mom = moments_from_sums(
                s.sum(0).cpu().numpy(), (s * s).sum(0).cpu().numpy(), s.shape[0]
            )
            labels.append(int(np.argmax(mom.mean)))
            # planning: what n estimation samples with these moments would certify
            stats.append(dataclasses.replace(mom, n=ctx.n))
        scores, _ = self._radii(ctx, list(range(n_cand)), stats, alpha_cand / k, labels)
        state = {"setup": setup, "labels": labels, "alpha_each": alpha_cand / k}
        if self.selection == "n0":
            best = int(np.argmax(scores))
            state["chosen"] = [best]
            consumers = [SoftStats(k, *self.grid[best], ctx.n)]
            label = labels[best]
        else:
            state["chosen"] = list(range(n_cand))
            consumers = [SoftStats(k, m, t, ctx.n) for m, t in self.grid]
            label = labels[int(np.argmax(scores))]
        state["selection_scores"] = [float(s) for s in scores]
        return Plan(self, label, alpha, consumers, score=float(np.max(scores)), state=state)

    def finish(self, ctx: Context, plan: Plan) -> Certification:
        chosen = plan.state["chosen"]
        labels = [plan.state["labels"][g] for g in chosen]
        stats = [c.moments() for c in plan.consumers]
        radii, infos = self._radii(ctx, chosen, stats, plan.state["alpha_each"], labels)
        best = int(np.argmax(radii))
        details = {
            "selection": self.selection,
            "grid": [list(c) for c in self.grid],
            "selection_scores": plan.state["selection_scores"],
            "alpha": plan.alpha,
            "alpha_per_bound": plan.state["alpha_each"],
            "n": ctx.n,
            "candidates": [dict(info, radius=float(r)) for info, r in zip(infos, radii)],
            **infos[best],
            **plan.state["setup"],
        }
        radius = float(radii[best])
        if not radius > 0:
            return abstain(self.name, details)
        return Certification(int(labels[best]), shave(radius), self.name, details)
