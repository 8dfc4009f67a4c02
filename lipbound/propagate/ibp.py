"""Interval bound propagation: values of the input-independent nodes, interval bounds of every
input-dependent node (each op's own ``ibp`` rule), and the interval bound of a linear function
of one node."""

from __future__ import annotations

from torch import Tensor

from lipbound.bounds.interval import sum_elements
from lipbound.graph.ir import CONST, INPUT, Graph
from lipbound.ops import registry
from lipbound.propagate.state import BoundState


def evaluate_fixed(graph: Graph) -> dict[str, Tensor]:
    """Values of every node that does not depend on the perturbed input."""
    dep = graph.depends_on_input()
    vals: dict[str, Tensor] = {}
    for n in graph.nodes:
        if dep[n.name]:
            continue
        if n.op == CONST:
            vals[n.name] = n.params["value"]
        else:
            op = registry.get(n.op, n.where)
            vals[n.name] = op.apply(n.params, *[vals[s] for s in n.inputs])
    return vals


def evaluate(graph: Graph, x: Tensor) -> dict[str, Tensor]:
    """Values of every node at the inputs ``x`` [N, *input shape] (floating point)."""
    vals = evaluate_fixed(graph)
    dep = graph.depends_on_input()
    for n in graph.nodes:
        if n.op == INPUT:
            vals[n.name] = x
        elif dep[n.name]:
            op = registry.get(n.op, n.where)
            vals[n.name] = op.apply(n.params, *[vals[s] for s in n.inputs])
    return vals


def ibp_pass(state: BoundState, only_missing: bool = False) -> None:
    """Interval bounds of every input-dependent node (intersected with known bounds);
    ``only_missing`` skips nodes that already have bounds."""
    for n in state.graph.nodes:
        if not state.dep[n.name] or (only_missing and n.name in state.bounds):
            continue
        if n.op == INPUT:
            iv = state.domain.interval()
        else:
            op = registry.get(n.op, n.where)
            iv = op.ibp(n.params, *[state.interval(s) for s in n.inputs])
        state.set_bounds(n.name, iv)


def ibp_spec_upper(state: BoundState, target: str, A: Tensor) -> Tensor:
    """Interval-arithmetic bound of <A, v_target>: A+ u + A- l, [B, S]."""
    iv = state.interval(target)
    lo, up = iv.lower.unsqueeze(1), iv.upper.unsqueeze(1)
    return sum_elements(A.clamp(min=0) * up + A.clamp(max=0) * lo)
