"""Branch-and-bound on input sub-boxes for output bounds ``lower <= C f(x) <= upper``.

The engine maximises the 2S rows [C; -C]: upper bounds of C f and of -C f over every sub-box
come from CROWN (one batched propagation over the boxes, intersected with IBP), attained
values from evaluating f at box centres (projected into the input set). ``stop_below`` lets a
verifier stop as soon as a property is proven.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lipbound.bab.engine import BabResult, maximize
from lipbound.bab.lipschitz import _sub_balls
from lipbound.bounds.domains import LpBall
from lipbound.graph.ir import Graph
from lipbound.jacobian.attained import _model64, _project
from lipbound.progress import ProgressFlag
from lipbound.propagate.driver import bound_graph_spec, prepare_state


def bab_output_bounds(model: nn.Module, graph: Graph, C: Tensor, domain: LpBall, *,
                      timeout: float, rtol: float = 1e-4, atol: float = 1e-7, batch: int = 64,
                      max_domains: int = 200_000, stop_below: Tensor | None = None,
                      progress: ProgressFlag = "auto") -> tuple[Tensor, Tensor, BabResult]:
    """(lower [S], upper [S], search result) with lower <= C f(x) <= upper on the set.

    ``stop_below`` [2S] (optional): stop once every row of [C; -C] is certified below it.
    """
    m64, dtype = _model64(model)
    S = C.shape[0]
    CC = torch.cat([C, -C])

    def bound(lo: Tensor, up: Tensor) -> Tensor:
        dom = _sub_balls(domain, lo, up)
        with torch.no_grad():
            state = prepare_state(graph, dom, "crown")
            lo_b, up_b = bound_graph_spec(state, graph.output, C.unsqueeze(0), "crown")
        return torch.cat([up_b, -lo_b], 1)

    def attain(pts: Tensor) -> Tensor:
        with torch.no_grad():
            y = m64(pts.to(dtype).reshape(pts.shape[0], *graph[graph.input].shape))
        return (y.reshape(pts.shape[0], -1).to(C.dtype) @ CC.t())

    def project(pts: Tensor) -> Tensor:
        return _project(domain, pts)

    center = domain.center
    init = attain(center)[0]
    wit = center.expand(2 * S, *center.shape[1:]).clone()
    box = domain.interval()
    res = maximize(bound, attain, box.lower[0], box.upper[0], init_lower=init, init_witness=wit,
                   timeout=timeout, rtol=rtol, atol=atol, batch=batch, max_domains=max_domains,
                   stop_below=stop_below, project=project, progress=progress,
                   desc="bab outputs")
    return -res.upper[S:], res.upper[:S], res
