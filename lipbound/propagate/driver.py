"""One entry point for bounding linear functions of a graph node over a domain."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from lipbound.bounds.domains import Domain
from lipbound.bounds.interval import sum_elements
from lipbound.bounds.restriction import UNRESTRICTED, Restriction
from lipbound.errors import UnknownMethodError
from lipbound.graph.ir import Graph
from lipbound.propagate import own_rounding
from lipbound.propagate.alpha import alpha_crown_upper
from lipbound.propagate.crown import crown_upper
from lipbound.propagate.ibp import evaluate_fixed, ibp_pass, ibp_spec_upper
from lipbound.propagate.intermediate import crown_intermediate
from lipbound.propagate.state import BoundState

METHODS = ("ibp", "crown", "alpha-crown")


def check_method(method: str, allowed: tuple[str, ...] = METHODS) -> str:
    key = str(method).lower().replace("_", "-")
    if key == "alpha":
        key = "alpha-crown"
    if key not in allowed:
        raise UnknownMethodError(f"unknown method {method!r}; choose one of {', '.join(allowed)}")
    return key


def prepare_state(graph: Graph, domain: Domain, method: str = "crown",
                  restriction: Restriction = UNRESTRICTED, iterations: int = 0,
                  witnesses: Mapping[str, Tensor] | None = None) -> BoundState:
    """Fixed values, IBP bounds of every node, and (crown methods) CROWN intermediate bounds.

    Under a ``restriction`` the bounds hold on its sub-domains: the state carries its splits
    (bounds clamped to the split signs, beta terms in CROWN) and its known forward bounds are
    intersected in after IBP. ``iterations`` > 0 optimises the intermediate bounds
    (alpha/beta-CROWN per element, see :func:`~lipbound.propagate.crown.crown_intermediate`;
    ``witnesses``: values of sign-only nodes at points of the domain, passed on to it).
    """
    state = BoundState(graph, domain, evaluate_fixed(graph), splits=dict(restriction.splits),
                       boxes=dict(restriction.boxes))
    ibp_pass(state)
    for name, iv in restriction.forward.items():
        state.set_bounds(name, iv)
    for name, iv in restriction.boxes.items():  # kink splits: sound on each set's box
        state.set_bounds(name, iv)
    if method != "ibp":
        crown_intermediate(state, iterations=iterations, witnesses=witnesses)
    return state


def bound_graph_spec(state: BoundState, target: str, C: Tensor, method: str = "crown",
                     iterations: int = 30) -> tuple[Tensor, Tensor]:
    """Sound bounds ``lower <= <C[b, s], v_target(x)> <= upper`` over the domain, [B, S] each.

    C: [B or 1, S, *shape(target)]. The result is intersected with the IBP bound, so it is
    never looser than IBP; alpha-CROWN is never looser than CROWN.
    """
    B = state.domain.batch_size
    C = C.expand(B, *C.shape[1:]) if C.shape[0] == 1 else C
    A = torch.cat([C, -C], 1)
    S = C.shape[1]
    up = ibp_spec_upper(state, target, A)
    if method == "crown":
        with torch.no_grad():
            up = _with_ibp(state, target, A, up, crown_upper(state, target, A))
    elif method == "alpha-crown":
        up = _with_ibp(state, target, A, up, alpha_crown_upper(state, target, A, iterations))
    return -up[:, S:], up[:, :S]


def covers_own_rounding(state: BoundState, method: str) -> bool:
    """Whether :func:`bound_graph_spec`'s bounds of ``method`` already contain the rounding
    of their own computation (CROWN's per-step tally, :mod:`lipbound.propagate.own_rounding`,
    and the IBP bound widened by :func:`~lipbound.propagate.rounding.compute_allowance`
    wherever it is the smaller)."""
    return method != "ibp" and own_rounding.applies(state, state.domain.interval().lower.dtype)


def _with_ibp(state: BoundState, target: str, A: Tensor, ibp: Tensor, crown: Tensor) -> Tensor:
    """min(IBP, CROWN) bound [B, S]; where CROWN carries its own rounding and IBP is smaller
    somewhere, IBP is first widened by the global own-rounding allowance."""
    if own_rounding.applies(state, crown.dtype) and bool((ibp < crown).any()):
        from lipbound.propagate.rounding import compute_allowance

        own = compute_allowance(state.graph, state.domain.interval(), target, crown.dtype)
        ibp = ibp + sum_elements(A.detach().abs() * own.unsqueeze(1))
        ibp = torch.nextafter(ibp, torch.full_like(ibp, float("inf")))
    return torch.minimum(ibp, crown)
