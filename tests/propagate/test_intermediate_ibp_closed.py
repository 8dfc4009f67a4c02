"""After CROWN intermediate bounds, every node's interval is at least as tight as IBP of its
inputs' final intervals (the IBP pass ran before the inputs were tightened). Without this an
exact-interval node such as the rsqrt of a LayerNorm variance, which CROWN skips, keeps the
IBP-of-IBP interval, and deep LayerNorm models overflow."""

from __future__ import annotations

import torch

from lipbound.bounds.domains import make_domain
from lipbound.graph.ir import INPUT
from lipbound.inputs import batched_for, get_traced, resolve_model
from lipbound.models.zoo import zoo_input, zoo_model
from lipbound.ops import registry
from lipbound.propagate.driver import prepare_state


def test_crown_intermediate_bounds_are_ibp_closed():
    model = resolve_model(zoo_model("mixer", dtype=torch.float64))
    x = batched_for(model, zoo_input("mixer").double())
    graph = get_traced(model, x, torch.float64, x.device).graph
    state = prepare_state(graph, make_domain(x, 1e-3, float("inf")), "crown")
    checked = 0
    for n in graph.nodes:
        if n.op == INPUT or not state.dep[n.name]:
            continue
        ibp = registry.get(n.op).ibp(n.params, *[state.interval(s) for s in n.inputs])
        iv = state.interval(n.name)
        assert torch.isfinite(iv.lower).all() and torch.isfinite(iv.upper).all(), n.name
        slack = 1e-12 * (1 + ibp.upper.abs() + ibp.lower.abs())
        assert (iv.lower >= ibp.lower - slack).all() and (iv.upper <= ibp.upper + slack).all()
        checked += n.op == "pow"
    assert checked >= 2  # the rsqrt of both LayerNorms' variances
