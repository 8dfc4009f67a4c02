"""Bounding Clarke-Jacobian graphs: element-wise Jacobian bounds and gradient-norm bounds.

Forward bounds are computed once with batch 1 and broadcast to the S spec rows; the backward
nodes are bounded with the same engine (IBP, CROWN, alpha-CROWN) in batch S.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lipbound.bounds.domains import LpBall
from lipbound.bounds.interval import Interval
from lipbound.bounds.restriction import UNRESTRICTED, Restriction
from lipbound.graph.ir import Graph
from lipbound.graph.shapes import nodes_needing_bounds, relu_like_only, sign_only_nodes
from lipbound.jacobian.build import JacobianGraph, jacobian_graph
from lipbound.ops import registry
from lipbound.propagate.alpha import alpha_crown_upper, iterate_in, stop_when_flat
from lipbound.propagate.crown import crown_upper
from lipbound.propagate.driver import prepare_state
from lipbound.propagate.ibp import evaluate, evaluate_fixed, ibp_pass
from lipbound.propagate.intermediate import crown_intermediate, crown_node_bounds, node_rows
from lipbound.propagate.state import BoundState

#: alpha-CROWN steps for the forward intermediate bounds under method "crown" (cheap: batch 1);
#: the reference implementation's Jacobian bounds optimise the forward relaxations by default
FORWARD_ITERATIONS = 20
#: ... stopped early once ``alpha.STOP_PATIENCE`` steps improve their sum by at most this
#: fraction (1e-4 after a single step lost up to 3.6x on ACAS Xu and 6 % on mnistfc against
#: the full optimisation; at 1e-5 over 4 steps every shared VNN-COMP box checked gets the
#: fully optimised value, tests/jacobian/test_forward_stop.py)
FORWARD_STOP_REL = 1e-5
#: method "crown": dtype of the forward optimisation's Adam iterates (they choose parameters;
#: the bounds are float64 passes): float32 left all 95 shared VNN-COMP boxes and the CNN
#: benchmarks equal to 1e-10 at 0.75x the time; elsewhere (alpha-crown's Jacobian bounds) it
#: moved values by up to +-0.2 % (bench_lipschitz), so they keep float64 iterates
FORWARD_ITERATE_DTYPE: torch.dtype | None = torch.float32
#: method "alpha-crown": every intermediate and gradient-element optimisation stops once a
#: step improves its chunk's bounds by at most this fraction (the norm bound's own
#: optimisation, S rows, runs its full ``iterations``)
ALPHA_STOP_REL = 1e-4


def jacobian_state(forward: Graph, C: Tensor, domain: LpBall, method: str,
                   q: float | None = None, iterations: int = 20,
                   forward_iterations: int | None = None, bound_gradient: bool = True,
                   restriction: Restriction = UNRESTRICTED
                   ) -> tuple[BoundState, JacobianGraph]:
    """Bounds of every node of the joint graph for spec rows C [S, K] over D input sets.

    The joint graph's batch is D * S (row d * S + s: set d, spec row s); forward bounds are
    computed at batch D and repeated. method "crown": forward intermediate bounds optimised
    per neuron (alpha-CROWN, ``forward_iterations`` steps, default ``FORWARD_ITERATIONS``,
    stopped once a step improves a chunk's bounds by at most ``FORWARD_STOP_REL``),
    CROWN for the backward graph and for every element of the gradient node. "alpha-crown":
    the intermediate bounds optimised for up to ``iterations`` steps (only the elements CROWN
    leaves undecided, stopped once a step improves a chunk by at most ``ALPHA_STOP_REL``), the
    gradient's elements by CROWN and then at most ``MAX_OPTIMISED_GRADIENT_ELEMENTS`` of them
    optimised (:func:`_bound_gradient`). Every bound is sound for any projected slopes. "ibp":
    intervals only. ``bound_gradient=False`` skips the per-element CROWN bounds of the gradient
    (a row per input element; branch-and-bound relies on the linear norm bound instead).
    ``restriction`` (:class:`~lipbound.bounds.restriction.Restriction`) restricts set d to its
    split signs and brings in known bounds: the forward bounds are clamped to the splits and
    intersected with ``restriction.forward`` before the forward CROWN pass, the switch of a
    split neuron takes the split's derivative (its sibling domain covers the other one; the
    gradient norm is convex in each switch, so vertex patterns attain the supremum), and
    ``restriction.gradient`` is intersected in before the backward graph's relaxations are
    formed.
    """
    it = iterations if method == "alpha-crown" else 0
    if forward_iterations is None:
        forward_iterations = FORWARD_ITERATIONS
    fwd_it = max(it, forward_iterations) if method != "ibp" else 0
    if method == "crown" and not relu_like_only(forward):
        fwd_it = 0  # smooth relaxations re-solve intercepts every step: too slow to pay off
    stop = {"crown": FORWARD_STOP_REL, "alpha-crown": ALPHA_STOP_REL}.get(method)
    D, S = domain.batch_size, C.shape[0]
    jg = jacobian_graph(forward, C.repeat(D, 1) if D > 1 else C, q)
    witnesses = (_sign_witnesses(forward, jg, domain, restriction)
                 if method == "crown" and fwd_it > 0 else None)
    low = FORWARD_ITERATE_DTYPE if method == "crown" else None
    with stop_when_flat(stop), iterate_in(low):
        fstate = prepare_state(forward, domain, method, restriction, iterations=fwd_it,
                               witnesses=witnesses)
    rows = torch.arange(D, device=C.device).repeat_interleave(S)
    state = BoundState(jg.graph, domain.select(rows), evaluate_fixed(jg.graph))
    for name, iv in fstate.bounds.items():
        iv = restriction.strict_switch(name, iv)  # strict signs for the switches of splits
        state.bounds[name] = iv if D == 1 else Interval(iv.lower[rows], iv.upper[rows])
    _one_sided_derivatives(state, forward, restriction, rows if D > 1 else None)
    ibp_pass(state, only_missing=True)
    if restriction.gradient is not None:
        state.set_bounds(jg.gradient, restriction.gradient)
    if method != "ibp":
        with stop_when_flat(ALPHA_STOP_REL if it else None):
            crown_intermediate(state, skip=set(fstate.bounds) | {jg.gradient}, iterations=it,
                               per_set=True)
            if bound_gradient and state.dep[jg.gradient]:
                _bound_gradient(state, jg.gradient, it)
    return state, jg


#: method "crown": points of the domain at which the forward pre-activations whose bounds
#: matter only through their signs are evaluated, so that the forward optimisation skips the
#: bounds no optimisation can make strict (a point where z_i >= 0 keeps u_i >= 0)
SIGN_WITNESSES = 32


def _sign_witnesses(forward: Graph, jg: JacobianGraph, domain: LpBall,
                    restriction: Restriction) -> dict[str, Tensor] | None:
    """Values [N, D, *shape] at ``SIGN_WITNESSES`` seeded points of each input set of the
    forward nodes whose bounds the joint graph, unoptimised, reads only as signs (None under
    splits: the points would have to satisfy them). Only which bounds are optimised depends
    on them: every bound stays a sound CROWN bound."""
    if restriction.splits or restriction.boxes:
        return None
    targets = [jg.gradient] + ([jg.norm] if jg.norm else [])
    names = sign_only_nodes(jg.graph, nodes_needing_bounds(forward), targets)
    if not names:
        return None
    ref = domain.interval().lower
    gen = torch.Generator(device=ref.device).manual_seed(0)
    x = domain.sample(SIGN_WITNESSES, gen)  # [N, D, *in]
    N, D = x.shape[:2]
    with torch.no_grad():
        vals = evaluate(forward, x.reshape(N * D, *x.shape[2:]))
    return {n: vals[n].reshape(N, D, *vals[n].shape[1:]) for n in names}


#: method "alpha-crown": at most this many gradient elements are optimised (one alpha-CROWN
#: run per element, each many CROWN passes): those with the largest |g_i| relaxation gap
MAX_OPTIMISED_GRADIENT_ELEMENTS = 256


def _bound_gradient(state: BoundState, gradient: str, iterations: int) -> None:
    """CROWN bounds of every element of the gradient node; with ``iterations`` > 0 then
    alpha-CROWN only for the elements whose CROWN bounds can still change a relaxation of the
    norm node that reads them (:func:`~lipbound.propagate.intermediate.node_rows`: for |g_i|
    the elements of mixed sign; all when no op reads the gradient), at most
    ``MAX_OPTIMISED_GRADIENT_ELEMENTS`` of them (the largest gap of the |g_i| chord over its
    lower bound, l u / (u - l) at 0). The other elements keep their CROWN bounds, which the
    element-wise norm bound then uses: optimising them could only tighten that bound, which
    the linear norm bound (q in {1, 2}) usually beats, at a cost of one alpha-CROWN run per
    element (it made alpha-CROWN 100-1000x slower than CROWN on small CNNs)."""
    state.set_bounds(gradient, crown_node_bounds(state, gradient, None, 0))
    if iterations <= 0:
        return
    rows = node_rows(state, gradient)
    cap = MAX_OPTIMISED_GRADIENT_ELEMENTS
    if rows is None or rows.numel() > cap:
        g = state.interval(gradient)
        lo, up = g.lower.flatten(1), g.upper.flatten(1)
        gap = (-lo.clamp_max(0) * up.clamp_min(0) / (up - lo).clamp_min(1e-300)).amax(0)
        if rows is not None:
            gap = torch.zeros_like(gap).index_copy_(0, rows, gap[rows])
        rows = gap.topk(min(cap, gap.numel())).indices.sort().values
    state.set_bounds(gradient, crown_node_bounds(state, gradient, rows, iterations))


def _one_sided_derivatives(state: BoundState, forward: Graph, restriction: Restriction,
                           rows: Tensor | None) -> None:
    """Bounds of the derivative nodes that read a node with kink splits (the backward nodes
    with that one input), from its bounds opened at the split points
    (:meth:`~lipbound.bounds.restriction.Restriction.open_box`): each side of a split takes
    its own one-sided derivative, as the switches of sign splits do."""
    if not restriction.boxes:
        return
    fwd = {n.name for n in forward.nodes}
    for n in state.graph.nodes:
        if n.name in fwd or len(n.inputs) != 1 or n.inputs[0] not in restriction.boxes:
            continue
        iv = restriction.open_box(n.inputs[0], state.bounds[n.inputs[0]], rows)
        state.bounds[n.name] = registry.get(n.op, n.where).ibp(n.params, iv)


def elementwise_norm_upper(g: Interval, q: float) -> Tensor:
    """sup of ||v||_q over the box g [S, *in] -> [S]."""
    m = g.abs_max().flatten(1)
    if q == math.inf:
        return m.max(1).values
    return torch.linalg.vector_norm(m, ord=q, dim=1)


def norm_upper(state: BoundState, jg: JacobianGraph, q: float, method: str,
               iterations: int = 30) -> Tensor:
    """Upper bound [S] of ||g||_q over the domain, the best of the elementwise bound and (for
    q in {1, 2} with crown methods) a linear bound through |.| or (.)^2 nodes."""
    best = elementwise_norm_upper(state.interval(jg.gradient), q)
    if jg.norm is None or method == "ibp":
        return best
    S = state.domain.batch_size
    ones = torch.ones(S, 1, 1, dtype=best.dtype, device=best.device)
    if method == "alpha-crown":
        lin = alpha_crown_upper(state, jg.norm, ones, iterations)[:, 0]
    else:
        with torch.no_grad():
            lin = crown_upper(state, jg.norm, ones)[:, 0]
    if q == 2.0:
        lin = lin.clamp_min(0).sqrt()
    return torch.minimum(best, lin)


def lipschitz_upper(forward: Graph, C: Tensor, domain: LpBall, method: str, q: float,
                    iterations: int = 30) -> Tensor:
    """Upper bound [D * S] of ||grad C_s . f||_q over the domain (:func:`jacobian_state`
    then :func:`norm_upper`). Under "alpha-crown" the element-wise least of the optimised
    bound and the "crown" bound: the optimised state's tighter intermediate bounds do not
    make every CROWN bound tighter (CROWN is not monotone in them, and summation orders
    differ), so only the minimum is guaranteed never looser than CROWN (costs one CROWN run).
    """
    state, jg = jacobian_state(forward, C, domain, method, q)
    upper = norm_upper(state, jg, q, method, iterations)
    if method == "alpha-crown":
        state, jg = jacobian_state(forward, C, domain, "crown", q)
        upper = torch.minimum(upper, norm_upper(state, jg, q, "crown"))
    return upper
