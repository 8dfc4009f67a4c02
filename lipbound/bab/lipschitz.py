"""Branch-and-bound on input sub-boxes for local Lipschitz constants.

Each sub-box is bounded by CROWN on the Clarke-Jacobian graph restricted to the sub-box
(``LpBall`` with the sub-box as its data range, all boxes in one batched propagation); the
attained value at a point is the dual norm of the autograd gradient of each spec row there
(float64 copy of the model). Input splitting suits low-dimensional inputs (tabular data,
ACAS Xu); on images its progress is slow, and the status says so by staying "timeout".
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lipbound.bab.anytime import BabResult
from lipbound.bab.input_split import maximize
from lipbound.bab.relu_split import mlp_layers
from lipbound.bounds.domains import LpBall
from lipbound.errors import UnsupportedModelError
from lipbound.graph.ir import Graph
from lipbound.jacobian.attained import attained_lower, model64, row_gradients
from lipbound.jacobian.bound import jacobian_state, norm_upper
from lipbound.progress import ProgressFlag


def sub_balls(domain: LpBall, lo: Tensor, up: Tensor) -> LpBall:
    """The input set ∩ each box [lo[n], up[n]] as a batch of N clipped balls."""
    N = lo.shape[0]
    idx = torch.zeros(N, dtype=torch.long, device=lo.device)
    return LpBall(domain.center[idx], domain.eps[idx], domain.p, lo, up)


def bab_local_lipschitz(model: nn.Module, graph: Graph, C: Tensor, domain: LpBall, q: float, *,
                        timeout: float, rtol: float = 1e-4, batch: int = 128,
                        max_domains: int = 200_000, n_samples: int = 256, seed: int = 0,
                        forward_iterations: int = 0, split_weight: Tensor | None = None,
                        focus_max: bool = False, progress: ProgressFlag = "auto") -> BabResult:
    """Anytime bounds on max over the ball (batch 1) of ||grad C_s f||_q for every row s.

    Returns upper [S] (certified at any stopping point) and lower [S] attained at witness
    [S, *in] inside the ball. ``split_weight`` [*in] (default: :func:`first_layer_weight`)
    scales box widths when choosing the coordinate to halve.
    """
    if split_weight is None:
        split_weight = first_layer_weight(graph, C)
    m64, dtype = model64(model)
    C64 = C.to(dtype)

    def bound(lo: Tensor, up: Tensor) -> Tensor:
        dom = sub_balls(domain, lo, up)
        with torch.no_grad():
            state, jg = jacobian_state(graph, C, dom, "crown", q,
                                       forward_iterations=forward_iterations)
            ub = norm_upper(state, jg, q, "crown")
        return ub.reshape(lo.shape[0], C.shape[0])

    def attain(pts: Tensor) -> Tensor:
        G = row_gradients(m64, pts.to(dtype), C64)  # [S, N, *in]
        return torch.linalg.vector_norm(G.flatten(2), ord=q, dim=2).t().to(C.dtype)

    def project(pts: Tensor) -> Tensor:
        return domain.project(pts)

    low, wit = attained_lower(model, C, domain, q, n_samples, seed=seed)
    box = domain.interval()
    return maximize(bound, attain, box.lower[0], box.upper[0], init_lower=low.to(C.dtype),
                    init_witness=wit.to(C.dtype), timeout=timeout, rtol=rtol, batch=batch,
                    max_domains=max_domains, project=project, split_weight=split_weight,
                    focus_max=focus_max, progress=progress, desc="bab lipschitz")


def first_layer_weight(graph: Graph, C: Tensor) -> Tensor | None:
    """For an MLP, sum_j |W_1[j, i]| per input i (how strongly input i moves the first
    layer's pre-activations, hence the activation pattern); None for other graphs."""
    try:
        W = mlp_layers(graph)[0].W
    except UnsupportedModelError:
        return None
    w = torch.tensor(abs(W).sum(0), dtype=C.dtype, device=C.device)
    return w.reshape(graph[graph.input].shape)
