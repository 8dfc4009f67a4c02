"""Branch and bound for local Lipschitz constants: the objective
:class:`~lipbound.bab.relu_split.LipschitzSearch` (domains bounded by CROWN on the
Clarke-Jacobian graph with their sign splits in force, on the ball clipped to their box)
maximised by the one search of :mod:`lipbound.bab.search`, with any brancher: ``"input"``
(halve input boxes: tabular data, ACAS Xu), ``"relu"`` (activation signs) or ``"mixed"``
(halves while they help, then signs, which converges near ReLU kinks on low-dimensional
inputs). Attained values: the dual norm of the autograd gradient of each spec row at box
centres and LP points (float64 copy of the model).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lipbound.bab.anytime import Anytime, BabResult
from lipbound.bab.relu_split import LipschitzSearch, mlp_layers, sub_balls
from lipbound.bab.search import Brancher, search
from lipbound.bounds.domains import LpBall
from lipbound.errors import UnsupportedModelError
from lipbound.graph.ir import Graph
from lipbound.jacobian.attained import attained_lower
from lipbound.progress import ProgressFlag

__all__ = ["bab_lipschitz", "bab_local_lipschitz", "bab_relu_lipschitz", "first_layer_weight",
           "sub_balls"]

#: domains per step, by brancher (input halves are cheap to bound, sign domains are not)
BATCH = {"input": 128, "relu": 32, "mixed": 64}
#: steps of the smoothed gradient-norm ascent for the attained lower bounds (ReLU MLPs,
#: :func:`lipbound.jacobian.attained.attained_lower`): a high attained value prunes early
SMOOTH_STEPS = 30


def make_brancher(split: str, graph: Graph, C: Tensor, domain: LpBall,
                  split_weight: Tensor | None = None) -> Brancher:
    """The brancher of ``split`` ("input" | "relu" | "mixed"); input halves weigh box widths
    by ``split_weight`` [*in] (default :func:`first_layer_weight`)."""
    if split_weight is None and split != "relu":
        split_weight = first_layer_weight(graph, C)
    w = None if split_weight is None else split_weight.flatten()
    box = domain.interval()
    width = float((box.upper - box.lower).max())
    return Brancher(split, w, 1e-9 * width)


def bab_lipschitz(model: nn.Module, graph: Graph, C: Tensor, domain: LpBall, q: float, *,
                  timeout: float, split: str = "relu", rtol: float = 1e-4, atol: float = 1e-9,
                  batch: int | None = None, max_domains: int = 200_000, n_samples: int = 256,
                  seed: int = 0, split_weight: Tensor | None = None, focus_max: bool = False,
                  progress: ProgressFlag = "auto") -> BabResult:
    """Anytime bounds on max over the ball (batch 1) of ||grad C_s f||_q for every row s.

    Returns upper [S] (certified at any stopping point) and lower [S] attained at witness
    [S, *in] inside the ball; status "certified" when the gap closed (then, with signs
    split to the leaves, upper is the exact maximum over the feasible patterns), "timeout",
    "domain limit" or "exhausted" (no domain left to refine, gap still open). ``focus_max``:
    certify max_s only (see :meth:`lipbound.bab.anytime.Anytime.target`).
    """
    run = Anytime(timeout, rtol, atol, max_domains, focus_max)
    srch = LipschitzSearch(model, graph, C, domain, q)
    if split != "relu":  # plain CROWN forward bounds: input halves are many and cheap, and
        srch.forward_iterations = 0  # each bounds its own gradient elements
        srch.force_elements = True
    brancher = make_brancher(split, graph, C, domain, split_weight)
    smooth = SMOOTH_STEPS if srch.layers is not None else 0  # MLPs: cheap double backprops
    L, W = attained_lower(model, C, domain, q, n_samples, seed=seed, smooth_steps=smooth)
    box = domain.interval()
    return search(srch, brancher, box.lower[0], box.upper[0], L.to(C.dtype), W.to(C.dtype),
                  run, batch=batch or BATCH[split], progress=progress)


def bab_local_lipschitz(model: nn.Module, graph: Graph, C: Tensor, domain: LpBall, q: float,
                        **kw) -> BabResult:
    """:func:`bab_lipschitz` with input halves."""
    return bab_lipschitz(model, graph, C, domain, q, split="input", **kw)


def bab_relu_lipschitz(model: nn.Module, graph: Graph, C: Tensor, domain: LpBall, q: float,
                       **kw) -> BabResult:
    """:func:`bab_lipschitz` with sign splits."""
    return bab_lipschitz(model, graph, C, domain, q, split="relu", **kw)


def first_layer_weight(graph: Graph, C: Tensor) -> Tensor | None:
    """For an MLP, sum_j |W_1[j, i]| per input i (how strongly input i moves the first
    layer's pre-activations, hence the activation pattern); None for other graphs."""
    try:
        W = mlp_layers(graph)[0].W
    except UnsupportedModelError:
        return None
    w = torch.tensor(abs(W).sum(0), dtype=C.dtype, device=C.device)
    return w.reshape(graph[graph.input].shape)


