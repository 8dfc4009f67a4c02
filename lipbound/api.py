"""The public API (DESIGN section 2): output bounds, Jacobian bounds, local Lipschitz constants."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lipbound.bab.milp_stage import (
    MIN_STAGE_SECONDS,
    SEARCH_SHARE,
    ExactFn,
    milp_applies,
    milp_stage,
    stage_worth,
)
from lipbound.bab.split_points import undecided_kinks
from lipbound.bounds.domains import make_domain
from lipbound.errors import InputError, ProblemTooLargeError, SolverError, UnsupportedModelError
from lipbound.gradmode import outside_inference_mode
from lipbound.graph.ir import Graph
from lipbound.graph.shapes import split_points
from lipbound.inputs import (
    Traced,
    as_tensor,
    batched_for,
    check_dtype,
    check_eps,
    check_finite_result,
    check_positive_int,
    check_precision,
    check_timeout,
    get_traced,
    resolve_model,
    spec_matrix,
)
from lipbound.jacobian.attained import attained_lower
from lipbound.jacobian.bound import jacobian_state, lipschitz_upper, norm_upper
from lipbound.jacobian.naive import naive_lipschitz
from lipbound.norms import dual_norm
from lipbound.propagate.driver import (
    METHODS,
    bound_graph_spec,
    check_method,
    covers_own_rounding,
    prepare_state,
)
from lipbound.propagate.rounding import finish_elements, finish_norms, finish_outputs
from lipbound.propagate.state import coefficient_dtype
from lipbound.results import LipschitzResult


class OutputBounds(NamedTuple):
    """Certified ``lower[s] <= C_s . f(x) <= upper[s]`` for every x in the input set; [S] each."""

    lower: Tensor
    upper: Tensor


@outside_inference_mode
def output_bounds(model: nn.Module, x: Any, eps: float, norm: float | int | str = math.inf,
                  spec: Any = None, method: str = "crown",
                  data_range: tuple[Any, Any] | None = None, iterations: int = 30,
                  dtype: torch.dtype = torch.float64, timeout: float | None = None,
                  progress: bool | str = "auto", split: str = "auto",
                  prove_above: Any = None, precision: str = "float64") -> OutputBounds:
    """Sound bounds on ``C f(x')`` over ``{x' : ||x' - x||_norm <= eps}`` (∩ data_range).

    model: eval-mode module mapping [B, *in] -> [B, K]; x: [*in] or [1, *in]; spec: None
    (identity) or [S, K]; method: "ibp" | "crown" | "alpha-crown" | "bab" (branch-and-bound
    for ``timeout`` seconds, default ``DEFAULT_BAB_TIMEOUT``; it stops early once the bounds
    meet values attained at points of the set; ``split`` as for :func:`local_lipschitz`:
    "input" boxes, "relu" signs with beta-CROWN and LP checks, "mixed", or "auto" (input
    boxes up to ``INPUT_SPLIT_MAX_DIM`` input dimensions, else signs); ``prove_above``
    [S] refines only the lower bounds not yet above it and stops as soon as every
    ``lower[s] > prove_above[s]`` is certified, as a verifier needs; the upper bounds are then
    the root's). Computation runs in ``dtype`` (float64 by default) on x's device;
    ``precision="float32"`` computes CROWN's backward coefficients (the bulk of the work) in
    float32 with a proven rounding allowance per step (:mod:`lipbound.propagate.mixed`;
    methods "crown" and "alpha-crown"; "bab" runs in ``dtype``).

    The bounds contain both the real-arithmetic function of the stored weights and the
    model's own forward pass in its dtype, at every point of the set: they are widened by the
    forward pass's rounding error bound and their own computation's
    (:mod:`lipbound.bounds.rounding`). Bounds that overflow raise InputError.
    """
    model = resolve_model(model)
    method = check_method(method, (*METHODS, "bab"))
    iterations = check_positive_int(iterations, "iterations")
    timeout = check_timeout(timeout)
    coef = check_precision(precision)
    traced, _, C, domain = _setup(model, x, eps, norm, spec, data_range, dtype)
    graph = traced.graph
    if method == "bab":
        lo, up, _ = _bab_outputs(model, graph, C, domain, timeout, split, progress,
                                 _stop_below(prove_above, C))
        return OutputBounds(*_finish_outputs(lo, up, C, traced, domain))
    with coefficient_dtype(coef):
        state = prepare_state(graph, domain, method)
        lo, up = bound_graph_spec(state, graph.output, C.unsqueeze(0), method, iterations)
        return OutputBounds(*_finish_outputs(lo[0], up[0], C, traced, domain, state.bounds,
                                             covers_own_rounding(state, method)))


@outside_inference_mode
def output_bounds_batch(model: nn.Module, centers: Any, eps: Any,
                        norm: float | int | str = math.inf, spec: Any = None,
                        method: str = "crown", dtype: torch.dtype = torch.float64
                        ) -> OutputBounds:
    """:func:`output_bounds` for a batch of B balls at once: ``centers`` [B, *in], ``eps`` a
    number or [B] (one radius per ball); returns lower, upper [B, S]. One propagation for
    the whole batch (method "ibp", "crown" or "alpha-crown"), so many small balls (the noisy
    points of randomized smoothing) cost about as much as a few single calls. The bounds
    contain the real function and the model's own forward pass, as :func:`output_bounds`."""
    model = resolve_model(model)
    method = check_method(method)
    centers = as_tensor(centers, "centers")
    if centers.dim() < 2 or centers.shape[0] == 0:
        raise InputError("centers must be a non-empty batch [B, *in]")
    traced = get_traced(model, centers[:1], dtype, centers.device)  # checks the shape
    graph = traced.graph
    batch = centers.to(dtype)
    K = graph[graph.output].shape[0]
    C = spec_matrix(spec, K, dtype, centers.device)
    e = torch.as_tensor(eps, dtype=dtype).reshape(-1)
    if e.numel() not in (1, batch.shape[0]):
        raise InputError(f"eps needs 1 or {batch.shape[0]} entries, got {e.numel()}")
    for v in e.tolist():
        check_eps(v)
    domain = make_domain(batch, e.to(centers.device), norm)
    state = prepare_state(graph, domain, method)
    lo, up = bound_graph_spec(state, graph.output, C.unsqueeze(0), method)
    return OutputBounds(*_finish_outputs(lo, up, C, traced, domain, state.bounds,
                                         covers_own_rounding(state, method)))


def _finish_outputs(lo, up, C, traced: Traced, domain, known=None, own_included=False):
    """Output bounds widened for the forward pass's and (unless ``own_included``) their own
    rounding (InputError if any overflowed)."""
    with torch.no_grad():
        bounds = finish_outputs(lo.detach(), up.detach(), C, traced.graph, traced.raw,
                                domain.interval(), traced.precision, known, own_included)
    return _finite(bounds, "output bounds", domain)


@dataclass(frozen=True)
class OutputProof:
    """Result of :func:`prove_outputs`: certified ``lower <= C f <= upper`` [S] over the
    set, and ``proven`` [G]: goal g holds at every point of the set (some row s of goal g
    has C_s f > prove_above[s] there); ``status`` is the search's stopping reason;
    ``points`` [2S, *in]: the points of the set where the search attained the largest value
    of each row of [C; -C] (rows S + s: the smallest C_s f found; candidate counterexamples,
    not verified)."""

    lower: Tensor
    upper: Tensor
    proven: Tensor
    status: str
    points: Tensor | None = None


@outside_inference_mode
def prove_outputs(model: nn.Module, x: Any, eps: float, spec: Any, prove_above: Any,
                  groups: Any = None, norm: float | int | str = math.inf,
                  data_range: tuple[Any, Any] | None = None, timeout: float | None = None,
                  dtype: torch.dtype = torch.float64, split: str = "auto",
                  progress: bool | str = "auto", witness_check: Any = None) -> OutputProof:
    """Branch and bound towards goals of the form "some row s of goal g has C_s f(x') >
    prove_above[s]", for every x' in the set (as :func:`output_bounds`).

    ``groups`` [S]: a non-negative goal id per spec row (default: every row its own goal);
    ``proven`` lists the goals in increasing id order.
    A goal is a disjunction over its rows, decided per sub-domain: different parts of the set
    may use different rows (what refuting a conjunction of output constraints needs: the
    unsafe set ``C f <= d`` is empty when some row exceeds its d on every part). The search
    refines only domains where some goal does not hold yet and stops once every goal holds
    everywhere (status "below threshold"), at ``timeout`` or at its domain cap.
    ``witness_check`` (optional): called with the points the search attains [N, *in] and
    their violation [N] (min over goals of max over its rows of C_s f - prove_above[s]: <= 0
    where some goal fails); returning True stops the search (status "counterexample").
    """
    model = resolve_model(model)
    timeout = check_timeout(timeout)
    traced, _, C, domain = _setup(model, x, eps, norm, spec, data_range, dtype)
    graph = traced.graph
    below = _stop_below(prove_above, C)
    S = C.shape[0]
    g = torch.arange(S) if groups is None else torch.as_tensor(groups).reshape(-1)
    if g.numel() != S or g.dtype.is_floating_point or bool((g < 0).any()):
        raise InputError(f"groups needs {S} non-negative integer goal ids (one per spec row), "
                         f"got {groups!r}")
    g = g.to(device=C.device, dtype=torch.long)
    _, g = torch.unique(g, return_inverse=True)  # ids 0 .. G-1 in increasing order
    rows = torch.cat([torch.full_like(g, -1), g])  # the upper rows [C] are no goal's
    lo, up, res = _bab_outputs(model, graph, C, domain, timeout, split, progress, below, rows,
                               witness_check)
    lo, up = _finish_outputs(lo, up, C, traced, domain)
    return OutputProof(lo, up, res.proven, res.status, res.witness)


def _bab_outputs(model, graph, C, domain, timeout, split, progress, stop_below, groups=None,
                 witness_check=None):
    # deferred: heavy optional dependency (highspy via the sign-split LP)
    from lipbound.bab import bab_output_bounds

    chosen = _choose_split(graph, split)
    if split == "auto" and chosen == "mixed":
        chosen = OUTPUT_AUTO_SPLIT
    return bab_output_bounds(model, graph, C, domain, split=chosen,
                             timeout=DEFAULT_BAB_TIMEOUT if timeout is None else timeout,
                             stop_below=stop_below, groups=groups, progress=progress,
                             witness_check=witness_check)


LIPSCHITZ_METHODS = ("naive", "ibp", "crown", "alpha-crown", "bab", "exact")

#: time limit of method "bab" when no timeout is given (seconds)
DEFAULT_BAB_TIMEOUT = 60.0
#: split="auto" splits input boxes up to this many input dimensions ("mixed": halves, then
#: neurons at the kinks that cut the boxes; "input" without kinks), else kinks ("relu")
INPUT_SPLIT_MAX_DIM = 8
#: ... for output bounds and proof goals, input halves alone (``OUTPUT_AUTO_SPLIT``): the
#: outputs are continuous, so the relaxation error of a box shrinks with it, kinks or not (a
#: gradient jumps at a kink, which is why Lipschitz constants need sign splits). Chosen on a
#: development family disjoint from bench_bab_family's evaluation seeds
#: (experiments/verify_split_choice.py, seeds 100-169: 26 nets with 2-8 inputs and tight
#: true goals, 20 s): input halves decided 26, mixed 22; where both did, input halves were
#: faster on 19 of 22, by a median factor of 2.5
OUTPUT_AUTO_SPLIT = "input"
#: ... for Lipschitz constants, mixed only where method crown leaves more than this many
#: kink elements undecided at the root (a gradient norm is constant on each activation region,
#: so sign splits close the gap where few regions meet the ball; with many, input halves
#: shrink them first). Chosen on a development family disjoint from bench_bab_family's 40
#: evaluation seeds (experiments/bab_split_choice.py, seeds 100-169, 31 nets with 2-8 inputs,
#: 10 s each): sign splits were faster on every net with at most 30 undecided elements (often
#: 20-50x), mixed on the two with 40 and 66; and ACAS Xu 1_1 at prop_3's centre needs mixed
LIPSCHITZ_MIXED_MIN_UNSTABLE = 32


def _setup(model: Any, x: Any, eps: Any, norm: Any, spec: Any, data_range: Any,
           dtype: torch.dtype):
    """Validated (traced graphs, x1, C [S, K], domain) shared by the entry points.

    ``model`` comes checked from :func:`resolve_model` (eval mode, precision); every argument
    is checked here before the model is traced.
    """
    eps = check_eps(eps)
    dtype = check_dtype(dtype)
    x = as_tensor(x)
    x1 = batched_for(model, x).to(dtype)
    domain = make_domain(x1, eps, norm, data_range)
    traced = get_traced(model, x1, dtype, x.device)
    K = traced.graph[traced.graph.output].shape[0]
    C = spec_matrix(spec, K, dtype, x.device)
    return traced, x1, C, domain


def _finite(bounds: tuple[Tensor, Tensor], what: str, domain) -> tuple[Tensor, Tensor]:
    """``bounds`` after :func:`check_finite_result` (InputError if any overflowed)."""
    check_finite_result(*bounds, what, float(domain.eps[0]))
    return bounds


@outside_inference_mode
def jacobian_bounds(model: nn.Module, x: Any, eps: float, norm: float | int | str = math.inf,
                    spec: Any = None, method: str = "crown",
                    data_range: tuple[Any, Any] | None = None,
                    dtype: torch.dtype = torch.float64) -> OutputBounds:
    """Certified element-wise bounds on the Clarke Jacobian of C f over the input set.

    Returns (lower, upper), each [S, *in]: for every x' in the set, every chain-rule Clarke
    gradient v of C_s . f at x' satisfies lower[s] <= v <= upper[s] elementwise (the Clarke
    Jacobian of the real-arithmetic function; widened for the computation's rounding).
    """
    model = resolve_model(model)
    method = check_method(method)
    traced, _, C, domain = _setup(model, x, eps, norm, spec, data_range, dtype)
    state, jg = jacobian_state(traced.graph, C, domain, method)
    g = state.interval(jg.gradient)
    with torch.no_grad():
        bounds = finish_elements(g.lower.detach(), g.upper.detach(), jg.graph, jg.gradient,
                                 domain.interval())
    return OutputBounds(*_finite(bounds, "Jacobian bounds", domain))


@outside_inference_mode
def local_lipschitz(model: nn.Module, x: Any, eps: float, norm: float | int | str = math.inf,
                    spec: Any = None, method: str = "crown", timeout: float | None = None,
                    data_range: tuple[Any, Any] | None = None, n_samples: int = 256,
                    seed: int = 0, iterations: int = 30, dtype: torch.dtype = torch.float64,
                    progress: bool | str = "auto", split: str = "auto",
                    objective: str = "max", precision: str = "float64"):
    """Certified local Lipschitz constants of the rows of C f over an l_p ball around x.

    Returns a :class:`~lipbound.results.LipschitzResult` with ``upper[s]`` >= sup over
    ``{x' : ||x' - x||_p <= eps}`` (∩ data_range) of ||v||_q for every chain-rule Clarke
    gradient v of C_s . f (q the dual norm of p), and ``lower[s]``, the dual norm of a gradient
    at ``witness[s]`` inside the set. Methods: "naive" (global product of induced norms),
    "ibp" (Fast-Lip), "crown", "alpha-crown", "bab" (anytime branch-and-bound on input
    sub-boxes or activation signs, :mod:`lipbound.bab`; stops at a closed gap, ``timeout`` (default
    ``DEFAULT_BAB_TIMEOUT``) or its domain cap; ``status`` says which, ``details["trace"]``
    holds the anytime curve (``details["row_trace"]``: every row's upper bound over time);
    ``split``: "input" (halve input boxes), "relu" (activation
    signs of any ReLU/LeakyReLU network, with LP feasibility checks on MLPs, and the kinks of
    hardtanh / relu6 / clamp / hardsigmoid / |.| / hardswish), "mixed" (input halves while
    they help, then kinks) or "auto": mixed for at most ``INPUT_SPLIT_MAX_DIM`` input
    dimensions where crown leaves more than ``LIPSCHITZ_MIXED_MIN_UNSTABLE`` kink elements
    undecided, input for networks without kinks, relu otherwise; ``objective``:
    "max" tightens ``value`` = max_s upper[s] (rows whose bound is already below the best
    value attained by any row are not refined further; their upper bounds stay certified)
    and "rows" tightens every row), "exact" (MILP, :mod:`lipbound.exact.api`).
    ``precision``: "float64" or "float32" (CROWN coefficients in float32 with a proven
    rounding allowance per step, :mod:`lipbound.propagate.mixed`; crown methods only).
    """
    start = time.perf_counter()
    model = resolve_model(model)
    method = check_method(method, LIPSCHITZ_METHODS)
    timeout = check_timeout(timeout)
    n_samples = check_positive_int(n_samples, "n_samples")
    iterations = check_positive_int(iterations, "iterations")
    coef = check_precision(precision)
    if method == "exact":  # MILP per row (ReLU/LeakyReLU chains, l_inf / l_1)
        # deferred: heavy optional dependency (cvxpy)
        from lipbound.exact.api import exact_local_lipschitz

        return exact_local_lipschitz(model, x, eps, norm, spec, timeout, data_range, dtype=dtype)
    traced, _, C, domain = _setup(model, x, eps, norm, spec, data_range, dtype)
    graph = traced.graph
    q = dual_norm(domain.p)
    if method == "bab":
        if objective not in ("max", "rows"):
            raise InputError(f"objective must be 'max' or 'rows', got {objective!r}")
        exact = _exact_rows(model, x, eps, norm, C, data_range, dtype) \
            if milp_applies(graph, domain.p) else None
        return _bab_lipschitz(model, graph, C, domain, q, timeout, n_samples, seed, progress,
                              start, split, objective == "max", exact)
    details: dict[str, Any] = {}
    if method == "naive":
        upper = _finish_norms(naive_lipschitz(graph, C, domain.p), graph, C, domain, q)
    else:
        with coefficient_dtype(coef):
            upper = lipschitz_upper(graph, C, domain, method, q, iterations)
            upper = _finish_norms(upper, graph, C, domain, q)
        upper, details = _cap_by_global(model, graph, C, domain.p, upper)
    lower, witness = (attained_lower(model, C, domain, q, n_samples, seed=seed)
                      if not isinstance(model, Graph) else (torch.zeros_like(upper), None))
    return LipschitzResult(upper.detach(), lower.detach().to(upper.dtype), witness, method,
                           domain.p, float(domain.eps[0]), "certified",
                           time.perf_counter() - start, details)


#: the global bound local results are capped with (cheap: no SDP)
GLOBAL_CAP = "fast: least of the naive product and, for l_2 chains, certified ECLipsE-Fast"


def _cap_by_global(model: Any, graph: Graph, C: Tensor, p: float, upper: Tensor
                   ) -> tuple[Tensor, dict[str, Any]]:
    """``min(local, global)`` per row: a global constant bounds every local one
    (:mod:`lipbound.jacobian.global_bound`, certified, rounding included). The details say
    which bound each row reports (``bound_source``), the global values, or why none exists."""
    from lipbound.errors import UnsupportedOperationError
    from lipbound.jacobian.global_bound import graph_global_lipschitz

    try:
        with torch.no_grad():
            glob = graph_global_lipschitz(graph, C, p, model, "fast")
    except UnsupportedOperationError as exc:
        return upper, {"global_upper": None, "global_unavailable": str(exc)}
    g = glob.to(device=upper.device, dtype=upper.dtype)
    g = torch.where(g.double() < glob.to(upper.device), torch.nextafter(
        g, torch.full_like(g, math.inf)), g)  # never round the global bound down
    use = g < upper
    details = {"global_upper": g.tolist(), "global_method": GLOBAL_CAP,
               "local_upper": upper.tolist(),
               "bound_source": ["global" if u else "local" for u in use.tolist()]}
    return torch.where(use, g, upper), details


def _finish_norms(upper: Tensor, graph: Graph, C: Tensor, domain, q: float) -> Tensor:
    """Gradient-norm bounds widened for their computation's rounding."""
    from lipbound.jacobian.build import jacobian_graph

    jg = jacobian_graph(graph, C)
    with torch.no_grad():
        up = finish_norms(upper.detach(), jg.graph, jg.gradient, domain.interval(), q)
    return _finite((up, up), "Lipschitz upper bounds", domain)[1]


def _choose_split(graph: Graph, split: str) -> str:
    if split not in ("auto", "input", "relu", "mixed"):
        raise InputError(f"split must be 'auto', 'input', 'relu' or 'mixed', got {split!r}")
    if split != "auto":
        if split in ("relu", "mixed"):
            split_points(graph)  # raises UnsupportedModelError without kinks to split
        return split
    try:
        split_points(graph)
    except UnsupportedModelError:
        return "input"
    return "mixed" if graph[graph.input].numel <= INPUT_SPLIT_MAX_DIM else "relu"


def _exact_rows(model, x, eps, norm, C, data_range, dtype) -> ExactFn:
    """The MILP stage's solver: exact bounds of spec rows ``rows`` within ``seconds``."""

    def exact(rows: Tensor, seconds: float):
        # deferred: heavy optional dependency (cvxpy)
        from lipbound.exact.api import exact_local_lipschitz

        r = exact_local_lipschitz(model, x, eps, norm, C[rows], seconds, data_range,
                                  dtype=dtype)
        return r.upper, r.lower, r.witness, r.status == "certified"

    return exact


def _load_exact() -> None:
    """Import the MILP solver's modules (cvxpy: seconds on a loaded machine), so that the
    MILP stage's share of the budget is measured after the import, not spent on it."""
    import lipbound.exact.api  # noqa: F401  (deferred: heavy optional dependency)


def _bab_lipschitz(model, graph, C, domain, q, timeout, n_samples, seed, progress, start,
                   requested, focus_max, exact: ExactFn | None = None):
    """Method "bab": the search, then (``exact``: MILP-encodable problems) the MILP stage of
    :mod:`lipbound.bab.milp_stage` on the rows it left open."""
    # deferred: heavy optional dependency (highspy via the sign-split LP)
    from lipbound.bab import bab_lipschitz

    if isinstance(model, Graph):
        raise InputError("method 'bab' needs the model itself (attained values use autograd)")
    split = _choose_split(graph, requested)  # checked before any bound is computed
    with torch.no_grad():  # method "crown"'s bound holds on the whole ball: keep the better
        state, jg = jacobian_state(graph, C, domain, "crown", q)  # (a search stopped early,
        crown = norm_upper(state, jg, q, "crown")  # before its root bound, may be looser)
    if split == "mixed" and requested == "auto" and \
            undecided_kinks(graph, state.bounds) <= LIPSCHITZ_MIXED_MIN_UNSTABLE:
        split = "relu"
    stage: dict[str, Any] = {"ran": False}
    if exact is not None:  # too many undecided neurons: the MILP would not pay for its share
        worth, n_undecided = stage_worth(graph, state.bounds)
        if not worth:
            exact = None
            stage["skipped"] = f"{n_undecided} undecided ReLU inputs (> MAX_STAGE_UNDECIDED)"
    budget = DEFAULT_BAB_TIMEOUT if timeout is None else timeout
    offset = time.perf_counter() - start  # the search's clock starts after the CROWN bound
    share = SEARCH_SHARE[split] if exact is not None else 1.0
    search_start = time.perf_counter()
    res = bab_lipschitz(model, graph, C, domain, q, split=split,
                        timeout=max(budget * share - offset, 1e-3), n_samples=n_samples,
                        seed=seed, focus_max=focus_max, progress=progress)
    if exact is not None and res.status != "certified" and \
            budget - (time.perf_counter() - start) >= MIN_STAGE_SECONDS:
        try:
            _load_exact()  # inside the budget: the stage gets what is left after the import
            res, stage = milp_stage(res, exact, focus_max, budget - (time.perf_counter() - start),
                                    lambda: time.perf_counter() - search_start)
        except (ProblemTooLargeError, SolverError) as exc:  # the search's result stands
            stage = {"ran": False, "skipped": str(exc)}
    best = torch.minimum(res.upper, crown)
    upper = _finish_norms(best, graph, C, domain, q)
    upper, capped = _cap_by_global(model, graph, C, domain.p, upper)
    cmax = float(crown.max())
    trace = [(p.time + offset, min(p.upper, cmax), p.lower, p.domains) for p in res.trace]
    cr = crown.tolist()
    row_trace = [(p.time + offset, [min(u, c) for u, c in zip(p.rows, cr)]) for p in res.trace]
    return LipschitzResult(upper.detach(), res.lower.detach(), res.witness, "bab", domain.p,
                           float(domain.eps[0]), res.status, time.perf_counter() - start,
                           {"domains_bounded": res.domains_bounded, "trace": trace,
                            "row_trace": row_trace,
                            "split": split, "objective": "max" if focus_max else "rows",
                            "milp_stage": stage, **capped})


def _stop_below(prove_above: Any, C: torch.Tensor) -> torch.Tensor | None:
    """The BaB threshold on the rows [C; -C] that proves lower > prove_above (None: none)."""
    if prove_above is None:
        return None
    d = torch.as_tensor(prove_above, dtype=C.dtype, device=C.device).reshape(-1)
    if d.numel() != C.shape[0] or not bool(torch.isfinite(d).all()):
        raise InputError(f"prove_above needs {C.shape[0]} finite values (one per spec row), "
                         f"got {d.numel()}")
    return torch.cat([torch.full_like(d, torch.inf), -d])

