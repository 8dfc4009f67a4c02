"""Big-M bounds for the exact MILP from lipbound's own bound engine (CROWN on the joint graph).

One call of :func:`lipbound.jacobian.bound.jacobian_state` bounds every node of the joint forward
+ Clarke-Jacobian graph for all spec rows at once: the forward pre-activations z_i (CROWN
intermediate bounds, shared by the rows), the cotangents a_i entering each ReLU/LeakyReLU switch
(the backward quantities the MILP multiplies by the activation binaries), and the input gradient.
The engine's switches are stable only when l_z > 0 or u_z < 0, so its backward bounds cover the
same chain-rule set (delta free where z = 0) that the MILP ranges over.  Every bound is widened
outward by :func:`lipbound.exact.bounds.widen` for the rounding of the propagation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from lipbound.bounds.domains import Domain
from lipbound.exact.bounds import WIDEN_REL, MilpBounds, widen
from lipbound.exact.from_graph import GraphMLP
from lipbound.graph.ir import Graph
from lipbound.graph.shapes import relu_like_slope
from lipbound.jacobian.bound import jacobian_state, norm_upper
from lipbound.propagate.intermediate import crown_node_bounds


def _rows(iv_lo: Tensor, iv_hi: Tensor, S: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rel = WIDEN_REL if iv_lo.dtype == torch.float64 else 1e-5
    lo = iv_lo.detach().cpu().to(torch.float64).reshape(iv_lo.shape[0], -1)
    hi = iv_hi.detach().cpu().to(torch.float64).reshape(iv_hi.shape[0], -1)
    lo, hi = lo.expand(S, -1).numpy(), hi.expand(S, -1).numpy()
    return [widen(lo[s], hi[s], rel) for s in range(S)]


def engine_milp_bounds(graph: Graph, gm: GraphMLP, C: Tensor, domain: Domain, q: float,
                       method: str = "crown") -> list[MilpBounds]:
    """Sound :class:`MilpBounds` per spec row of C [S, K] from the engine (``method`` "crown",
    "alpha-crown" or "ibp"), over ``domain`` (batch 1) for gradient dual norm q."""
    state, jg = jacobian_state(graph, C, domain, method, q if q in (1.0, 2.0) else None)
    S = C.shape[0]
    # the cotangent a_i entering the switch of z_i: that of the ReLU-like node reading z_i
    cot_in = {n.inputs[0]: jg.cotangents[n.name] for n in graph.nodes
              if relu_like_slope(n) is not None and n.name in jg.cotangents}
    pre = [_rows(state.interval(z).lower, state.interval(z).upper, S) for z in gm.preact_nodes]
    back = []
    for z in gm.preact_nodes:
        a = state.interval(cot_in[z])
        back.append(_rows(a.lower, a.upper, S))
    g = state.interval(jg.gradient)
    if method != "ibp" and jg.norm is None:  # the gradient is not read by |.|: tighten it here
        with torch.no_grad():
            state.set_bounds(jg.gradient, crown_node_bounds(state, jg.gradient))
        g = state.interval(jg.gradient)
    grad = _rows(g.lower, g.upper, S)
    if jg.norm is not None:
        nu = norm_upper(state, jg, q, method).detach().cpu().to(torch.float64).numpy()
        rel = WIDEN_REL if C.dtype == torch.float64 else 1e-5
        nu = [float(v) + rel * (1 + abs(float(v))) for v in nu]
    else:
        nu = [math.inf] * S
    return [MilpBounds(tuple(p[s] for p in pre), tuple(b[s] for b in back), grad[s], nu[s],
                       method) for s in range(S)]
