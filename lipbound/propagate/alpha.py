"""alpha-CROWN: optimise the free parameters of the relaxations (ReLU lower slopes, slopes
of smooth activations, product-plane interpolations) by projected Adam on the final bound;
under branch-and-bound splits also the split multipliers beta >= 0 (beta-CROWN).

Every parameter value is sound after projection, so every iterate is a certified bound; the
result is the elementwise best over all iterates including the CROWN initialisation, hence
never looser than CROWN.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

from lipbound.ops import registry
from lipbound.propagate import own_rounding
from lipbound.propagate.adam import Adam
from lipbound.propagate.crown import beta_key, box_key, crown_upper
from lipbound.propagate.iterate_state import cast_coefficients, cast_state, target_widths
from lipbound.propagate.state import BoundState


def init_params(state: BoundState, target: str, S: int) -> dict[str, dict[str, Tensor]]:
    """Per-spec-row parameters [B, S, *shape] for every nonlinear ancestor of ``target``."""
    g = state.graph
    params: dict[str, dict[str, Tensor]] = {}
    for node in g.nodes[: g.position(target) + 1]:
        if not state.dep[node.name] or node.op in ("input", "const"):
            continue
        op = registry.get(node.op, node.where)
        if op.linear:
            continue
        init = op.init_opt(node.params, *[state.interval(s) for s in node.inputs])
        if not init:
            continue
        params[node.name] = {
            k: v.detach().unsqueeze(1).expand(v.shape[0], S, *v.shape[1:]).clone()
            .requires_grad_(True) for k, v in init.items()
        }
    return params | init_betas(state, target, S)


#: Adam learning rate of the split multipliers
BETA_LR = 0.1


def init_betas(state: BoundState, target: str, S: int) -> dict[str, dict[str, Tensor]]:
    """Zero multipliers [B, S, *shape] for split nodes up to ``target`` (zero = no change)."""
    g = state.graph
    pos = g.position(target)
    out = {}
    dtype = state.domain.interval().lower.dtype
    for name, split in state.splits.items():
        if g.position(name) > pos or not state.dep[name] or not bool((split != 0).any()):
            continue
        beta = torch.zeros(split.shape[0], S, *split.shape[1:], dtype=dtype,
                           device=split.device)
        out[beta_key(name)] = {"beta": beta.requires_grad_(True)}
    for name, box in state.boxes.items():  # kink splits: one multiplier per finite end
        if g.position(name) > pos or not state.dep[name]:
            continue
        zero = torch.zeros(box.lower.shape[0], S, *box.lower.shape[1:], dtype=dtype,
                           device=box.lower.device)
        out[box_key(name)] = {"beta_lo": zero.clone().requires_grad_(True),
                              "beta_up": zero.clone().requires_grad_(True)}
    return out


def _lr(state: BoundState, key: str) -> float:
    if key.endswith(("#beta", "#box")):
        return BETA_LR
    return registry.get(state.graph[key].op).opt_lr


def _project(state: BoundState, key: str, p: dict[str, Tensor]) -> None:
    if key.endswith(("#beta", "#box")):
        for v in p.values():
            v.clamp_(min=0)
        return
    node = state.graph[key]
    registry.get(node.op).project_opt(node.params, p)


#: relative improvement of the summed bounds below which optimisation stops (None: never);
#: set for a block of code with :func:`stop_when_flat`
#: ... measured over this many steps: single Adam steps often do not improve the best bound
#: (sign-like first steps, oscillation), and stopping after one such step left ACAS Xu 5_9
#: prop_3's "crown" Lipschitz bound at 3.6x the fully optimised one
STOP_PATIENCE = 4
_STOP_REL: ContextVar[float | None] = ContextVar("lipbound_alpha_stop_rel", default=None)


@contextmanager
def stop_when_flat(rel: float | None):
    """Within the block, :func:`alpha_crown_upper` stops as soon as its last
    ``STOP_PATIENCE`` steps improved the sum of the best bounds by at most ``rel`` times the
    sum of their magnitudes (every iterate is sound; the result is still the best over the
    iterates, never looser than CROWN)."""
    token = _STOP_REL.set(rel)
    try:
        yield
    finally:
        _STOP_REL.reset(token)


def alpha_crown_upper(state: BoundState, target: str, A: Tensor, iterations: int = 30,
                      lr_scale: float = 1.0) -> Tensor:
    """Optimised CROWN upper bound of <A, v_target> [B, S] (never looser than CROWN).

    The Adam iterates are evaluated without the rounding tally of
    :mod:`~lipbound.propagate.own_rounding` (it only widens a bound, it is not part of what
    is optimised, and it cost a fifth of every step); each spec row keeps the parameters of
    its best iterate (parameters are per row, [B, S, ...]) and the result is one sound CROWN
    pass with those kept parameters, elementwise min with the sound CROWN bound.
    """
    with torch.no_grad():
        best = crown_upper(state, target, A)
    opt = init_params(state, target, A.shape[1])
    if not opt or iterations <= 0:
        return best
    kept = _DISAGREE
    low = _low_precision(state, A, opt, best)
    if low is not None:  # float32 iterates, unless their first bound disagrees (ill-conditioned)
        it_state, it_A, it_opt = low

        def agrees(first: Tensor) -> bool:
            return _agrees(first, best, state, target, A)

        kept = _optimise(it_state, target, it_A, it_opt, iterations, lr_scale, best, agrees)
    if kept is _DISAGREE:
        kept = _optimise(state, target, A, opt, iterations, lr_scale, best)
    if kept is None:
        return best
    dtype = best.dtype
    kept = {n: {k: v.to(dtype) for k, v in p.items()} for n, p in kept.items()}
    with torch.no_grad():
        return torch.minimum(best, crown_upper(state, target, A, opt=kept))


_ITERATE_DTYPE: ContextVar[torch.dtype | None] = ContextVar("lipbound_alpha_iterate_dtype",
                                                            default=None)


@contextmanager
def iterate_in(dtype: torch.dtype | None):
    """Within the block, the iterates of :func:`alpha_crown_upper` on a float64 state run in
    ``dtype`` (None: the state's own): they only choose the parameters
    (:mod:`lipbound.propagate.iterate_state`), so only tightness can change, at the level of
    the optimisation's trajectory."""
    token = _ITERATE_DTYPE.set(dtype)
    try:
        yield
    finally:
        _ITERATE_DTYPE.reset(token)


#: ... used only where its CROWN bound at the initial parameters is, on every row, within
#: this fraction of the row's interval width (``iterate_state.target_widths``) of the float64
#: CROWN bound (ill-conditioned states, e.g. sums that cancel, iterate in float64)
ITERATE_AGREEMENT = 1e-4


def _low_precision(state: BoundState, A: Tensor, opt: dict[str, dict[str, Tensor]],
                   crown: Tensor):
    """(state, coefficients, fresh parameter leaves) in the dtype of :func:`iterate_in` for
    a float64 state with finite CROWN bounds ``crown``, else None."""
    dt = _ITERATE_DTYPE.get()
    if dt is None or crown.dtype != torch.float64 or not bool(torch.isfinite(crown).all()):
        return None
    it_opt = {n: {k: v.detach().to(dt).requires_grad_(True) for k, v in p.items()}
              for n, p in opt.items()}
    return cast_state(state, dt), cast_coefficients(A, dt), it_opt


def _agrees(first: Tensor, crown: Tensor, state: BoundState, target: str, A: Tensor) -> bool:
    """Whether the low-precision bound at the initial parameters is within
    ``ITERATE_AGREEMENT`` of each row's interval width of the float64 CROWN bound."""
    with torch.no_grad():
        scale = target_widths(state, target, A)
    close = (first.to(crown.dtype) - crown).abs() <= ITERATE_AGREEMENT * scale  # False: NaN
    return bool((close & torch.isfinite(scale)).all())


#: what :func:`_optimise` returns when its first bound fails the agreement check
_DISAGREE = object()


def _optimise(state: BoundState, target: str, A: Tensor, opt: dict[str, dict[str, Tensor]],
              iterations: int, lr_scale: float, start: Tensor, check=None):
    """Projected Adam on the summed bound; the parameters of each row's best iterate, better
    than ``start`` (the CROWN bound, whose rows keep the initial parameters; None when no
    parameter is an ancestor of the target; ``_DISAGREE`` when ``check`` rejects the first
    bound, at the initial parameters). Stops early per :func:`stop_when_flat`
    (a criterion over the whole chunk: freezing rows one by one once each was flat for up to
    8 steps lost ACAS Xu 5_9 prop_3's bound, 10.29 -> 36.86, through a neuron of the last
    layer that the slightly looser earlier layers no longer decide)."""
    groups = [{"params": list(p.values()), "lr": _lr(state, name) * lr_scale}
              for name, p in opt.items()]
    adam = Adam(groups, gamma=0.95)  # torch.optim.Adam's steps, without importing dynamo
    stop = _STOP_REL.get()
    sums: list[float] = []  # sum of the best (untallied) bounds after each step
    raw = start.to(_dtype_of(opt, start))
    kept = {n: {k: _per_set(v, raw.shape[0]) for k, v in p.items()} for n, p in opt.items()}
    for step in range(iterations):
        adam.zero_grad()
        with torch.enable_grad(), own_rounding.disabled():
            up = crown_upper(state, target, A, opt=opt)
            if not up.requires_grad:  # no parameter is an ancestor of the target
                return None
            if check is not None and step == 0 and not check(up.detach()):
                return _DISAGREE
            up.sum().backward()
        raw, kept = _keep_best(raw, kept, up.detach(), opt)
        sums.append(float(raw.sum()))
        if (stop is not None and len(sums) > STOP_PATIENCE
                and sums[-1 - STOP_PATIENCE] - sums[-1] <= stop * float(raw.abs().sum())):
            break  # flat: the last STOP_PATIENCE steps improved the bounds by <= stop
        adam.step()
        with torch.no_grad():
            for name, p in opt.items():
                _project(state, name, p)
    else:  # all steps taken: the last one's parameters are a candidate too
        with torch.no_grad(), own_rounding.disabled():
            raw, kept = _keep_best(raw, kept, crown_upper(state, target, A, opt=opt), opt)
    return kept


def _dtype_of(opt: dict[str, dict[str, Tensor]], default: Tensor) -> torch.dtype:
    for p in opt.values():
        for v in p.values():
            return v.dtype
    return default.dtype


def _per_set(v: Tensor, B: int) -> Tensor:
    """A copy of a parameter [B or 1, S, ...] with one entry per set of the batch: those the
    batch shares are kept per set, so every (set, row) keeps its own best iterate, as the
    minimum over the iterates' bounds does."""
    v = v.detach()
    return v.expand(B, *v.shape[1:]).clone() if v.shape[0] != B else v.clone()


def _keep_best(raw: Tensor, kept: dict[str, dict[str, Tensor]], up: Tensor,
               opt: dict[str, dict[str, Tensor]]):
    """(elementwise best bound [B, S], the parameters that gave each row's best)."""
    better = up < raw
    with torch.no_grad():
        for name, p in opt.items():
            for k, v in p.items():
                b = better.reshape(*better.shape, *([1] * (v.dim() - 2)))
                kept[name][k] = torch.where(b, v.detach(), kept[name][k])
    return torch.minimum(raw, up), kept
