"""Certified and attacked radii of one classified point (helpers of the robustness audit).

All certificates are for the margin functions ``m_k(x) = f_y(x) - f_k(x)`` (k != y) over the
ball ``{x' : ||x' - x||_p <= r}`` (∩ data_range); a radius r is certified when every m_k is
provably positive on that ball, which makes every radius below r certified too (the balls
are nested). Bisections only ever return radii that were certified by an actual call.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lipbound.api import local_lipschitz, output_bounds
from lipbound.attack import margin_attack
from lipbound.errors import UnknownMethodError

BAB_TIMEOUT = 1.0  # seconds per branch-and-bound call inside a bisection


def bisect(certified: Callable[[float], bool], hi: float, steps: int) -> float:
    """Largest radius in [0, hi] found certified by ``steps`` halvings (0 if none)."""
    return bracket(certified, hi, steps)[0]


def bracket(certified: Callable[[float], bool], hi: float, steps: int) -> tuple[float, float]:
    """(good, bad): good certified (or 0), bad the smallest radius that failed (inf if none)."""
    if hi <= 0:
        return 0.0, math.inf
    if certified(hi):
        return hi, math.inf
    good, bad = 0.0, hi
    for _ in range(steps):
        mid = (good + bad) / 2
        if certified(mid):
            good = mid
        else:
            bad = mid
    return good, bad


def bounds_radius(model: nn.Module, x: Tensor, C: Tensor, hi: float, norm: float,
                  data_range, steps: int, bab_timeout: float = BAB_TIMEOUT) -> tuple[float, str]:
    """Radius certified by CROWN output bounds (bisection), then, if method "bab" (where the
    API offers it, else "alpha-crown") certifies the smallest radius CROWN failed at, pushed
    up by a bisection with that method between there and ``hi`` (``bab_timeout`` seconds per
    "bab" call; 0 skips this stage). Returns (radius, the method that certified it)."""

    def ok(method: str, **kw) -> Callable[[float], bool]:
        def certified(r: float) -> bool:
            lo = output_bounds(model, x, r, norm=norm, spec=C, method=method,
                               data_range=data_range, **kw).lower
            return bool((lo > 0).all())
        return certified

    r, bad = bracket(ok("crown"), hi, steps)
    if r >= hi or bab_timeout <= 0:
        return r, "crown"
    has_timeout = "timeout" in inspect.signature(output_bounds).parameters
    try:
        tighter = ok("bab", **({"timeout": bab_timeout} if has_timeout else {}))
        name = "bab"
        first = tighter(bad)  # where CROWN failed; skip the search if this fails too
    except UnknownMethodError:
        tighter, name = ok("alpha-crown"), "alpha-crown"
        first = tighter(bad)
    if not first:
        return r, "crown"
    return bad + bisect(lambda e: tighter(bad + e), hi - bad, max(1, steps // 2)), name


def lipschitz_radius(model: nn.Module, model64: nn.Module, x: Tensor, C: Tensor, hi: float,
                     norm: float, data_range, steps: int) -> float:
    """Radius from local Lipschitz bounds: with L_k(r) >= sup over the r-ball of ||grad m_k||_q
    (q the dual norm), ``m_k(x') >= m_k(x) - L_k(r) ||x' - x||_p`` on the (convex) ball, so
    every rho <= r with ``m_k(x) > rho L_k(r)`` for all k is certified:
    ``rho(r) = min(r, min_k m_k(x) / L_k(r))`` (shrunk by 1e-9 for strictness), with
    m_k(x) evaluated in float64 and rounded down. The bisection on r keeps the best rho."""
    with torch.no_grad():
        m = (model64(x.double().unsqueeze(0)) @ C.double().T)[0]
    m = m - 1e-10 * (1 + m.abs())
    if not bool((m > 0).all()):
        return 0.0
    best = [0.0]

    def certified(r: float) -> bool:
        L = local_lipschitz(model, x, r, norm=norm, spec=C, method="crown",
                            data_range=data_range, n_samples=1).upper.double()
        ratio = torch.where(L > 0, m / L.clamp_min(1e-300), torch.full_like(m, math.inf))
        rho = min(r, float(ratio.min()) * (1 - 1e-9))
        best[0] = max(best[0], rho)
        return rho >= r * (1 - 1e-9)

    bisect(certified, hi, steps)
    return best[0]


def attack_radius(model: nn.Module, x: Tensor, y: int, eps_max: float, norm: float,
                  data_range, steps: int, generator: torch.Generator) -> float | None:
    """Smallest radius (by bisection) at which PGD found a point classified otherwise; 0 for a
    misclassified x; None when no attack succeeded within ``eps_max``."""
    dr = None if data_range is None else tuple(data_range)

    def found(r: float) -> bool:
        return margin_attack(model, x, y, r, norm=norm, data_range=dr,
                             generator=generator) is not None

    _, bad = bracket(lambda r: not found(r), eps_max, steps)  # bad: smallest radius attacked
    return None if bad == math.inf else bad
