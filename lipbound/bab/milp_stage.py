"""The MILP stage of method "bab": exactness where the branch-and-bound search leaves a gap.

On a ReLU / LeakyReLU MLP with an l_inf or l_1 ball (what the exact MILP encodes), the search
gets ``SEARCH_SHARE`` of the budget; rows whose gap it has not closed then go to the MILP
(:func:`lipbound.exact.api.exact_local_lipschitz`, CROWN big-M constants) for the rest. Both
results are certified over the same set, so per row the smaller upper bound and the larger
attained lower bound (with its witness) are kept. On low-dimensional inputs, where input
splitting cannot remove the relaxation of ReLU switches whose hyperplanes cut its boxes, the
MILP closes the gap exactly; where the search is fast it never reaches the stage.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from lipbound.bab.anytime import BabResult, TracePoint
from lipbound.bab.split_points import undecided_kinks
from lipbound.bounds.interval import Interval
from lipbound.errors import UnsupportedModelError
from lipbound.graph.ir import Graph
from lipbound.graph.shapes import relu_chain

#: the search's share of the budget when a MILP stage can follow it, by brancher: input
#: splitting stalls on boxes cut by ReLU hyperplanes, where the MILP of a low-dimensional
#: input is cheap. Sign splitting keeps the whole budget (a stage then runs only if the
#: search stops early, e.g. at its domain cap): on the 38 relu problems of the development
#: seeds 100-139 (experiments/bab_stage_share.py, budgets 5 and 20 s, objectives max and
#: rows) the search alone never had fewer bounds within 0.5 % of the best attained value
#: than with a stage at share 0.5 or 0.75, had more on 2 problems (rows at 5 / 20 s: 87 / 97
#: of 129 against 85 / 95) and a lower geometric mean of upper / attained in all four
#: settings; on the evaluation family (bench_bab_family.py) the stage's half budget was what
#: put bab behind method "exact" (p26, rows at 20 s: 0 against 3)
SEARCH_SHARE = {"input": 0.3, "relu": 1.0, "mixed": 0.5}
#: the MILP stage needs at least this many seconds to be worth starting
MIN_STAGE_SECONDS = 0.5

#: (rows [S'] of the spec, seconds) -> (upper [S'], lower [S'], witness [S', *in], certified)
ExactFn = Callable[[Tensor, float], tuple[Tensor, Tensor, Tensor, bool]]


#: the stage runs only up to this many input dimensions: the Lipschitz MILP needs a binary for
#: the sign of every gradient element, and beyond this it rarely finishes while taking half of
#: the budget from the search (mnistfc 256x2 prop_0, eps 0.01, 120 s, quiet core: search alone
#: 1.90x upper / attained, 263 domains; with the stage 2.58x, 123 domains). Every net of
#: bench_bab_family (2-64 inputs) keeps its stage.
MAX_STAGE_INPUTS = 64


#: ... and only where method crown leaves at most this many ReLU inputs undecided on the ball:
#: the MILP needs a binary per undecided neuron (besides the gradient signs), and its time
#: grows exponentially with them. On bench_bab_family's 40 problems (exact values at 30 s per
#: row, experiments/out/bab_family_exact.json), every problem whose MILP certified a row had
#: at most 58 undecided; the three with more than 64 (76, 78, 91) certified none. ACAS Xu 1_1
#: at prop_3's centre (eps 0.02) has 156: its stage never closed anything and took half of
#: the 60 s budget from the search (experiments/README.md, bench_bab, session 8).
MAX_STAGE_UNDECIDED = 64


def stage_worth(graph: Graph, bounds: dict[str, Interval]) -> tuple[bool, int]:
    """Whether a MILP stage is worth its share of the budget given method crown's forward ``bounds``
    on the ball (at most ``MAX_STAGE_UNDECIDED`` undecided kinks), and their count."""
    n = undecided_kinks(graph, bounds)
    return n <= MAX_STAGE_UNDECIDED, n


def milp_applies(graph: Graph, p: float) -> bool:
    """Whether the exact MILP encodes this problem (a ReLU/LeakyReLU chain, l_inf or l_1) and
    is small enough to be worth a stage (at most ``MAX_STAGE_INPUTS`` inputs)."""
    if p not in (math.inf, 1.0) or graph[graph.input].numel > MAX_STAGE_INPUTS:
        return False
    try:
        relu_chain(graph)
    except UnsupportedModelError:
        return False
    return True


def open_rows(res: BabResult, focus_max: bool, rtol: float = 1e-4) -> Tensor:
    """Indices of the rows whose gap the search left open (upper above the target, the best
    attained value of any row with ``focus_max``, else the row's own, by more than ``rtol``
    relative), smallest gap first."""
    target = torch.maximum(res.lower, res.lower.max()) if focus_max else res.lower
    gap = (res.upper - target) / (target.abs() + 1e-12)
    rows = torch.nonzero(gap > rtol).flatten()
    # smallest gaps first: the MILP shares its time evenly over what is left, so rows it
    # closes fast leave more for the hard ones
    return rows[torch.argsort(gap[rows])]


def milp_stage(res: BabResult, exact: ExactFn, focus_max: bool, seconds: float,
               clock: Callable[[], float]) -> tuple[BabResult, dict]:
    """``res`` improved by the MILP on its open rows within ``seconds`` (per row: min of the
    uppers, max of the attained lowers); the result and a summary for ``details``."""
    rows = open_rows(res, focus_max)
    if len(rows) == 0 or seconds < MIN_STAGE_SECONDS:
        return res, {"ran": False}
    t0 = time.perf_counter()
    up, lo, wit, certified = exact(rows, seconds)
    upper, lower, W = res.upper.clone(), res.lower.clone(), res.witness.clone()
    upper[rows] = torch.minimum(upper[rows], up.to(upper.dtype))
    better = lo.to(lower.dtype) > lower[rows]
    lower[rows] = torch.where(better, lo.to(lower.dtype), lower[rows])
    W[rows[better]] = wit[better].to(W.dtype).reshape(W[rows[better]].shape)
    closed = len(open_rows(replace(res, upper=upper, lower=lower), focus_max)) == 0
    status = "certified" if certified or closed else res.status
    trace = (*res.trace, TracePoint(clock(), float(upper.max()), float(lower.max()), 0,
                                    tuple(upper.tolist())))
    out = replace(res, upper=upper, lower=lower, witness=W, status=status, trace=trace)
    return out, {"ran": True, "rows": rows.tolist(), "certified": certified,
                 "seconds": time.perf_counter() - t0}
