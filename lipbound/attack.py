"""Projected gradient attacks: the empirical side of every certificate.

An attack only ever *finds* points; it proves nothing. Whatever it returns is a real input inside
the domain, so a violated property at that point is a genuine counterexample (callers re-check it,
e.g. with onnxruntime or in float64).

- :func:`pgd_minimize`: minimise a scalar objective ``fn(x) -> [R]`` over a box
  ``lower <= x <= upper`` (optionally also an l_2 ball around ``center``) with signed-gradient
  (l_inf) or normalised-gradient (l_2) steps and random restarts. Returns the best point found.
- :func:`vertex_minimize`: the same over a box by vertex steps: from each point, jump to the
  vertex of the box that minimises the objective's linearisation there (a Frank-Wolfe step of
  full length). Cheap, and it reaches counterexamples at corners of the box that small PGD
  steps, which settle in the nearest basin, do not.
- :func:`box_minimize`: vertex steps, then PGD (both over a box; PGD alone in an l_2 ball),
  the better point: what every attack of lipbound runs (verify's attacks,
  :func:`margin_attack`, the counterfactual audit).
- :func:`margin_attack`: look for ``x'`` in the l_inf or l_2 ball of radius ``eps`` around ``x``
  (clipped to ``data_range``) whose prediction differs from ``label``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

Objective = Callable[[Tensor], Tensor]


def _project(x: Tensor, lower: Tensor, upper: Tensor, center: Tensor | None,
             radius2: float | None) -> Tensor:
    if center is not None and radius2 is not None:
        d = (x - center).flatten(1)
        n = d.norm(dim=1, keepdim=True).clamp(min=1e-30)
        d = d * torch.clamp(radius2 / n, max=1.0)
        x = center + d.view_as(x)
    return torch.maximum(torch.minimum(x, upper), lower)


def _step(x: Tensor, g: Tensor, size: Tensor | float, l2: bool) -> Tensor:
    if l2:
        n = g.flatten(1).norm(dim=1).clamp(min=1e-30).view(-1, *([1] * (g.dim() - 1)))
        return x - size * g / n
    return x - size * g.sign()


def pgd_minimize(fn: Objective, lower: Tensor, upper: Tensor, *, steps: int = 50,
                 restarts: int = 8, center: Tensor | None = None, radius2: float | None = None,
                 x_init: Tensor | None = None, generator: torch.Generator | None = None,
                 ) -> tuple[Tensor, float]:
    """Best (lowest) point of ``fn`` found over ``{lower <= x <= upper}`` (∩ l_2 ball if given).

    ``lower``/``upper``: per-sample shape ``in_shape``; ``fn`` maps ``[R, *in_shape]`` to ``[R]``.
    Restart 0 starts at ``x_init`` (default the box centre), the others uniformly in the box;
    an ``x_init`` [k, *in_shape] starts the first k restarts at its points.
    Returns ``(x_best [*in_shape], fn(x_best))``; always a point inside the set.
    """
    lo, up = lower.unsqueeze(0), upper.unsqueeze(0)
    shape = (restarts, *lower.shape)
    if center is not None and radius2 is not None:
        d = torch.randn(shape, generator=generator, dtype=lower.dtype).to(lower.device)
        d = d / d.flatten(1).norm(dim=1).clamp(min=1e-30).view(-1, *([1] * lower.dim()))
        x = center.unsqueeze(0) + radius2 * d
    else:
        u = torch.rand(shape, generator=generator, dtype=lower.dtype).to(lower.device)
        x = lo + u * (up - lo)
    _place_starts(x, lower, upper, x_init, restarts)
    c = None if center is None else center.unsqueeze(0)
    x = _project(x, lo, up, c, radius2)
    l2 = radius2 is not None
    size = (2.0 * radius2 if l2 else (up - lo)) / max(steps, 1) * 2.5

    def move(x: Tensor, g: Tensor, t: int) -> Tensor:
        decay = 1.0 - t / (steps + 1)
        return _project(_step(x, g, size * decay, l2), lo, up, c, radius2)

    return _descend(fn, x, steps, move)


def _place_starts(x: Tensor, lower: Tensor, upper: Tensor, x_init: Tensor | None,
                  restarts: int) -> None:
    """Restart 0 at ``x_init`` (default the box centre), or the first k restarts at the k
    points of an ``x_init`` [k, *in_shape]; in place."""
    if x_init is None:
        x[0] = (lower + upper) / 2
    elif x_init.dim() == lower.dim() + 1:  # several starting points: the first restarts
        x[:x_init.shape[0]] = x_init[:restarts]
    else:
        x[0] = x_init


def _descend(fn: Objective, x: Tensor, steps: int, move) -> tuple[Tensor, float]:
    """The best point of ``fn`` over the iterates of the restarts x [R, *in]: at most
    ``steps`` moves ``move(x, grad, t)`` (None: stop)."""
    best_x, best_v = x[0].clone(), math.inf
    for t in range(steps + 1):
        x = x.detach().requires_grad_(True)
        v = fn(x)
        vd = v.detach()
        i = int(torch.argmin(vd))
        if float(vd[i]) < best_v:
            best_v, best_x = float(vd[i]), x[i].detach().clone()
        if t == steps:
            break
        (g,) = torch.autograd.grad(v.sum(), x)
        with torch.no_grad():
            nxt = move(x.detach(), g, t)
        if nxt is None:
            break
        x = nxt
    return best_x, best_v


def vertex_minimize(fn: Objective, lower: Tensor, upper: Tensor, *, steps: int = 10,
                    restarts: int = 8, x_init: Tensor | None = None,
                    generator: torch.Generator | None = None) -> tuple[Tensor, float]:
    """Best (lowest) point of ``fn`` found over ``{lower <= x <= upper}`` by vertex steps:
    each restart moves to ``argmin over the box of <grad fn(x), .>`` (``lower`` where the
    derivative is positive, ``upper`` where negative, unchanged where zero), at most
    ``steps`` times, stopping once no restart moves. Restart 0 starts at ``x_init`` (default
    the box centre), the others uniformly in the box; an ``x_init`` [k, *in_shape] starts the
    first k restarts at its points. Returns ``(x_best [*in_shape],
    fn(x_best))``; always a point of the box."""
    lo, up = lower.unsqueeze(0), upper.unsqueeze(0)
    u = torch.rand((restarts, *lower.shape), generator=generator, dtype=lower.dtype)
    x = lo + u.to(lower.device) * (up - lo)
    _place_starts(x, lower, upper, x_init, restarts)
    x = torch.minimum(torch.maximum(x, lo), up)

    def move(x: Tensor, g: Tensor, t: int) -> Tensor | None:
        nxt = torch.where(g > 0, lo, torch.where(g < 0, up, x))
        return None if bool((nxt == x).all()) else nxt

    return _descend(fn, x, steps, move)


#: vertex steps (:func:`vertex_minimize`) before PGD in :func:`box_minimize`. On mnistfc
#: 256x4 prop_1_0.05 the counterexample sits at a vertex of the box that 8-500 restarts of
#: 100 PGD steps never reached (they settle at violation 0.116); two vertex steps from the
#: centre reach it (experiments/README.md: bench_vnncomp session 13, attack_family.py).
VERTEX_STEPS = 10


def box_minimize(fn: Objective, lower: Tensor, upper: Tensor, *, steps: int, restarts: int,
                 center: Tensor | None = None, radius2: float | None = None,
                 x_init: Tensor | None = None, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, float]:
    """The best point of ``fn`` over the box from ``VERTEX_STEPS`` vertex steps, then (unless
    they already reached a negative value) ``steps`` PGD steps, both with ``restarts`` starts
    (``x_init`` first, as :func:`pgd_minimize`). With an l_2 ball (``center``, ``radius2``)
    PGD alone: a vertex of the box is not a point of the ball. Always a point of the set."""
    x, v = None, math.inf
    if radius2 is None:
        x, v = vertex_minimize(fn, lower, upper, steps=VERTEX_STEPS, restarts=restarts,
                               x_init=x_init, generator=generator)
        if v < 0:
            return x, v
    xp, vp = pgd_minimize(fn, lower, upper, steps=steps, restarts=restarts, center=center,
                          radius2=radius2, x_init=x_init, generator=generator)
    return (xp, vp) if x is None or vp < v else (x, v)


@torch.no_grad()
def _box(x: Tensor, eps: float, data_range: tuple[float, float] | None) -> tuple[Tensor, Tensor]:
    lo, up = x - eps, x + eps
    if data_range is not None:
        lo, up = lo.clamp(min=data_range[0]), up.clamp(max=data_range[1])
    return lo, up


def margin_attack(model: nn.Module, x: Tensor, label: int, eps: float, *, norm: float = math.inf,
                  data_range: tuple[float, float] | None = None, steps: int = 50,
                  restarts: int = 8, generator: torch.Generator | None = None) -> Tensor | None:
    """A point within ``eps`` of ``x`` (l_inf or l_2, clipped to ``data_range``) that ``model``
    does not classify as ``label``, or None if none was found. ``x``: one input (no batch dim)."""
    if norm not in (math.inf, 2.0, 2):
        raise ValueError("margin_attack supports norm=inf and norm=2")
    l2 = norm != math.inf
    lo, up = _box(x, math.inf if l2 else eps, data_range)
    if l2:
        big = torch.finfo(x.dtype).max
        lo, up = lo.clamp(min=-big), up.clamp(max=big)

    def objective(z: Tensor) -> Tensor:
        logits = model(z)
        others = logits.clone()
        others[:, label] = -math.inf
        return logits[:, label] - others.max(dim=1).values

    xa, v = box_minimize(objective, lo, up, steps=steps, restarts=restarts, x_init=x,
                         center=x if l2 else None, radius2=eps if l2 else None,
                         generator=generator)
    if v >= 0:
        return None
    with torch.no_grad():
        if int(model(xa.unsqueeze(0)).argmax(1)) == label:
            return None
    return xa
