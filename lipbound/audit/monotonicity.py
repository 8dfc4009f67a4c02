"""Monotonicity audit: certify the sign of d f_output / d x_j over a whole input box.

    report = lipbound.audit.monotonicity(model, lower, upper, features=[2, 8], output=0)
    for v in report.features:
        print(v.feature, v.verdict, v.derivative_lower, v.derivative_upper)

Verdicts (with ``tol`` >= 0, default 1e-9, which absorbs the outward rounding of the bounds):

* ``"increasing"``: certified. Every chain-rule Clarke derivative d f / d x_j on the box is
  >= -tol, hence ``f(x + t e_j) >= f(x) - tol * t`` whenever both points lie in the box
  (f is Lipschitz, so it is the integral of its derivative along the segment, and the
  chain-rule set contains that derivative almost everywhere).
* ``"decreasing"``: certified, the same with every derivative <= tol.
* ``"not monotone"``: refuted by two verified points. ``witness`` is a point where autograd's
  derivative (float64) is strictly below -tol for the hypothesis "increasing" (strictly above
  tol for "decreasing") and a float64 central difference inside the box agrees, so a genuine
  violating pair sits at the witness; ``support`` is a point verified the same way with the
  opposite sign, so the feature is monotone in neither direction.
* ``"unknown"``: neither, within ``timeout`` seconds or ``max_domains`` bounded boxes per
  feature.

``derivative_lower``/``derivative_upper`` always enclose every Clarke derivative d f / d x_j on
the box (certified, from the leaves of the search), whatever the verdict.

The search is :func:`lipbound.bab.derivative.bab_derivative`: the branch and bound of
:mod:`lipbound.bab.search` with input halves and, on ReLU networks, the signs of the neurons
whose kinks cut a box (``method`` bounds every domain), deciding both hypotheses at once. On
ReLU / LeakyReLU chains it gets a quarter of the time, and a hypothesis it leaves open goes to
the exact MILP over the derivative (:mod:`lipbound.audit._exact_stage`): its certified minimum
proves the hypothesis, or its optimal pattern gives a candidate witness (verified as above).
``FeatureVerdict.stages`` records each MILP run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lipbound.audit._common import (
    box_bounds,
    float64_model,
    model_device,
    positive,
    run_batch,
    to_list,
)
from lipbound.audit._exact_stage import SEARCH_SHARE, ExactStage
from lipbound.audit._probe import Probe
from lipbound.bab.anytime import BabResult
from lipbound.bab.derivative import bab_derivative
from lipbound.bab.relu_split import mlp_layers
from lipbound.errors import InputError, ShapeError, UnsupportedModelError
from lipbound.gradmode import outside_inference_mode
from lipbound.inputs import batched_input, check_model, get_graph, resolve_model
from lipbound.progress import ProgressFlag, bar
from lipbound.propagate.driver import check_method

VERDICTS = ("increasing", "decreasing", "not monotone", "unknown")


@dataclass(frozen=True)
class FeatureVerdict:
    """The audit's answer for one (flat) input coordinate; see the module docstring."""

    feature: int
    verdict: str
    derivative_lower: float
    derivative_upper: float
    witness: Tensor | None
    witness_derivative: float | None
    domains: int
    time: float
    hypothesis: str | None = None
    support: Tensor | None = None
    support_derivative: float | None = None
    stages: tuple[dict, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature, "verdict": self.verdict,
            "derivative_lower": self.derivative_lower,
            "derivative_upper": self.derivative_upper,
            "witness": to_list(self.witness), "witness_derivative": self.witness_derivative,
            "hypothesis": self.hypothesis, "support": to_list(self.support),
            "support_derivative": self.support_derivative,
            "domains": self.domains, "time": self.time, "milp": list(self.stages),
        }


@dataclass(frozen=True)
class MonotonicityReport:
    """Per-feature verdicts of :func:`monotonicity` and the settings that produced them."""

    features: list[FeatureVerdict]
    output: int
    lower: Tensor
    upper: Tensor
    tol: float
    method: str
    timeout: float
    max_domains: int
    seed: int
    time: float

    def verdict(self, feature: int) -> FeatureVerdict:
        for v in self.features:
            if v.feature == feature:
                return v
        raise InputError(f"feature {feature} was not audited")

    def to_dict(self) -> dict[str, Any]:
        return {
            "audit": "monotonicity", "output": self.output, "lower": to_list(self.lower),
            "upper": to_list(self.upper), "tol": self.tol, "method": self.method,
            "timeout": self.timeout, "max_domains": self.max_domains, "seed": self.seed,
            "time": self.time, "features": [v.to_dict() for v in self.features],
        }


def _check_features(features: Any, n: int) -> list[int]:
    if features is None:
        return list(range(n))
    if isinstance(features, (int, bool)):
        features = [features]
    out = []
    for f in features:
        if isinstance(f, bool) or not hasattr(f, "__index__"):
            raise InputError(f"feature indices must be integers, got {f!r}")
        f = f.__index__()
        if not 0 <= f < n:
            raise InputError(f"feature index {f} out of range: the input has {n} features "
                             f"(flat indices 0..{n - 1})")
        out.append(f)
    if not out:
        raise InputError("features is empty")
    return out


def _check_output(K: int, output: Any) -> int:
    if isinstance(output, bool) or not isinstance(output, int) or not 0 <= output < K:
        raise InputError(f"output must be an integer in 0..{K - 1} (the model has {K} outputs), "
                         f"got {output!r}")
    return output


@outside_inference_mode
def monotonicity(model: nn.Module, lower: Any, upper: Any, features: Any = None,
                 output: int = 0, *, timeout: float = 30.0, max_domains: int = 10000,
                 seed: int = 0, progress: ProgressFlag = "auto", tol: float = 1e-9,
                 method: str = "crown") -> MonotonicityReport:
    """Certify, per feature, the sign of d f_output / d x_j over the box [lower, upper].

    ``lower``/``upper``: one input's shape (no batch dimension); ``features``: flat input
    indices (default all); ``timeout`` and ``max_domains`` apply to each feature. See the
    module docstring for the meaning of the verdicts and their guarantees.
    """
    start = time.perf_counter()
    check_model(model)
    timeout = positive("timeout", timeout)
    max_domains = positive("max_domains", max_domains, integer=True)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise InputError(f"tol must be a number >= 0, got {tol!r}")
    lo, hi = box_bounds(lower, upper, model_device(model))
    K = _num_outputs(model, (lo + hi) / 2)
    output = _check_output(K, output)
    feats = _check_features(features, lo.numel())
    spec = torch.zeros(1, K, dtype=torch.float64, device=lo.device)
    spec[0, output] = 1.0
    method = check_method(method)
    probe = Probe(float64_model(model), lo, hi, output, float(tol))
    search = _Search(model, lo, hi, spec, float(tol), method)
    verdicts = [
        _audit_feature(search, probe, j, timeout, max_domains, seed)
        for j in bar(feats, progress=progress, desc="monotonicity", unit="feature")
    ]
    return MonotonicityReport(verdicts, output, lo, hi, float(tol), method, timeout,
                              max_domains, int(seed), time.perf_counter() - start)


def _num_outputs(model: nn.Module, center: Tensor) -> int:
    """The model's output size K, running it on the box centre (ShapeError if it does not fit)."""
    p = next(iter(model.parameters()), None)
    dtype = p.dtype if p is not None else torch.float32
    try:
        with torch.no_grad():
            return run_batch(model, center.unsqueeze(0).to(dtype)).shape[1]
    except InputError:
        raise
    except Exception as exc:
        raise ShapeError(f"the model does not run on a box of shape {list(center.shape)}: "
                         f"{type(exc).__name__}: {exc}") from exc


def _sample(probe: Probe, j: int, gen: torch.Generator, n: int = 64) -> Tensor:
    lo, hi = probe.lo, probe.hi
    u = torch.rand((n, *lo.shape), generator=gen, dtype=lo.dtype).to(lo.device)
    pts = torch.cat([((lo + hi) / 2).unsqueeze(0), lo + u * (hi - lo)])
    with torch.enable_grad():
        return torch.cat([pts, probe.search(j, 1, gen), probe.search(j, -1, gen)])


def _first_verified(probe: Probe, pts: Tensor, d: Tensor, j: int, sign: int) -> Tensor | None:
    """The most wrong-signed point of ``pts`` (for ``sign``) that passes verification."""
    for i in torch.argsort(sign * d)[:8]:
        if probe.verify(pts[i], j, sign):
            return pts[i]
    return None


def _audit_feature(search: _Search, probe: Probe, j: int, timeout: float, max_domains: int,
                   seed: int) -> FeatureVerdict:
    """Sample for verified wrong-signed points of both signs; unless both exist, run the
    derivative search (:func:`lipbound.bab.derivative.bab_derivative`: input halves and
    kink splits, two goals "increasing" / "decreasing") and verify its attained points, then
    hand the hypotheses it left open to the MILP stage (:mod:`lipbound.audit._exact_stage`,
    ReLU / LeakyReLU chains); if both exist, bound the root domain only (the certified
    enclosure every verdict carries)."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + j)
    pts = _sample(probe, j, gen)
    d = probe.derivative(pts, j)
    sign = 1 if float(d.mean()) >= 0 else -1  # the hypothesis the samples suggest
    against = {s: _first_verified(probe, pts, d, j, s) for s in (1, -1)}
    # both signs verified by sampling: the root domain alone gives the certified enclosure
    decided = against[1] is not None and against[-1] is not None
    left = timeout - (time.perf_counter() - start)
    share = SEARCH_SHARE if search.stage.applies and not decided else 1.0
    res = search.run(j, share * left, 1 if decided else max_domains, int(seed) + j)
    domains = res.domains_bounded
    if decided:
        bound, proven, stages = res.upper.tolist(), [False, False], []
    else:
        bound, proven, stages = _close_goals(search, probe, j, res, against, start + timeout)
    lo_j, hi_j = -bound[0], bound[1]
    kw = {"stages": tuple(stages)}
    for k, s in enumerate((1, -1)):
        if proven[k]:
            return _verdict(j, "increasing" if s > 0 else "decreasing", lo_j, hi_j,
                            domains, start, hypothesis="increasing" if s > 0
                            else "decreasing", **kw)
    name = "increasing" if sign > 0 else "decreasing"
    if against[1] is None or against[-1] is None:
        return _verdict(j, "unknown", lo_j, hi_j, domains, start, hypothesis=name, **kw)
    w, sup = against[sign], against[-sign]
    return _verdict(j, "not monotone", lo_j, hi_j, domains, start, hypothesis=name, witness=w,
                    witness_derivative=float(probe.derivative(w[None], j)[0]), support=sup,
                    support_derivative=float(probe.derivative(sup[None], j)[0]), **kw)


def _close_goals(search: _Search, probe: Probe, j: int, res: BabResult,
                 against: dict[int, Tensor | None], deadline: float
                 ) -> tuple[list[float], list[bool], list[dict]]:
    """The search's goals (0: increasing, 1: decreasing), each open one (neither proven nor
    refuted by a verified point, which ``against`` receives) handed to the MILP stage with
    the search's bound as a cut: (bound [2]: -g_j <= bound[0], g_j <= bound[1]; proven [2];
    the stage records)."""
    bound = [float(res.upper[0]), float(res.upper[1])]
    proven, stages = res.proven.tolist(), []
    for k, s in enumerate((1, -1)):
        if any(proven):
            break
        if against[s] is None and float(res.lower[k]) > probe.tol \
                and probe.verify(res.witness[k], j, s):
            against[s] = res.witness[k]
        if against[s] is None:
            st = search.stage.decide(j, s, -bound[k], deadline - time.perf_counter())
            if st is None:
                continue
            stages.append(st.to_dict())
            bound[k] = min(bound[k], -st.lower)
            proven[k] = st.lower >= -probe.tol
            # each candidate's central difference stays inside its linear region
            against[s] = next((x for x, h in zip(st.candidates.to(probe.lo.device),
                                                 st.depths.tolist())
                               if probe.verify(x, j, s, step=h / 2)), None)
    return bound, proven, stages


def _verdict(j: int, verdict: str, lo: float, hi: float, domains: int, start: float,
             **kw) -> FeatureVerdict:
    return FeatureVerdict(j, verdict, lo, hi, kw.pop("witness", None),
                          kw.pop("witness_derivative", None), domains,
                          time.perf_counter() - start, **kw)


#: the audit's brancher on ReLU MLPs (where the sign LP proves leaves feasible): ReLU signs
#: reached the tightest derivative bounds on the penalty-trained diabetes net
#: (bench_audits.py); other networks split input halves and the signs of boxes cut by few
#: kinks ("mixed")
SPLIT_MLP = "relu"


class _Search:
    """The model's float64 graph and the spec row, shared by the features' searches."""

    def __init__(self, model: nn.Module, lo: Tensor, hi: Tensor, spec: Tensor, tol: float,
                 method: str):
        model = resolve_model(model)
        x1 = batched_input(model, lo.to(torch.float64))
        self.graph = get_graph(model, x1, torch.float64, lo.device)
        self.model, self.spec, self.tol, self.method = model, spec, tol, method
        self.lo, self.hi = lo.to(torch.float64), hi.to(torch.float64)
        self.stage = ExactStage(self.graph, spec, self.lo, self.hi, tol)
        try:
            mlp_layers(self.graph)
            self.split = SPLIT_MLP
        except UnsupportedModelError:
            self.split = "mixed"

    def run(self, j: int, seconds: float, max_domains: int, seed: int) -> BabResult:
        return bab_derivative(self.model, self.graph, self.spec, self.lo, self.hi, j, self.tol,
                              timeout=max(seconds, 1e-3), max_domains=max_domains,
                              method=self.method, seed=seed, split=self.split)
