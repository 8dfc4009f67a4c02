"""Robustness audit: certified radius per point by several certificates, and the attack gap.

    rep = lipbound.audit.robustness(model, X, y, eps_max=0.1, norm=float("inf"))
    rep.curves([0.0, 0.02, 0.05])     # {method: certified accuracy at each radius, "attack": ...}

Per point (x, y), each certified radius r means: every input within distance r of x (in
``norm``, ∩ ``data_range``) is classified y (for "smoothing": by the *smoothed* classifier,
with probability >= 1 - alpha over the sampling). Misclassified points get radius 0 and count
as not certified. Methods:

* ``"bounds"``: bisection on eps of CROWN output bounds of the margins f_y - f_k, then method
  "bab" (or "alpha-crown" where the API has no "bab") between that radius and the attack
  radius; ``details["bounds_method"]`` says which finished.
* ``"lipschitz"``: local Lipschitz margin certificate: with L_k(r) the certified local
  constant of m_k = f_y - f_k over the r-ball (``lipbound.local_lipschitz``, CROWN; the dual
  norm of the gradient of the margin row itself, so the constant factor is 1; with a
  Lipschitz constant L of f into l_2 it would be sqrt(2) L), every rho <= r with
  ``m_k(x) > rho * L_k(r)`` for all k is certified, by the mean-value inequality on the
  convex ball. Bisection on r keeps the best such rho.
* ``"smoothing"``: randomized smoothing (l_2 only) when ``smooth`` is given: a
  ``lipbound.Smooth`` or a dict with ``sigma`` and optional ``n0``, ``n``, ``alpha``,
  ``batch_size``, ``certificate`` (defaults 100, 10000, 0.001, 1000, "cohen"). It certifies
  the smoothed classifier, not ``model``, so it may exceed the attack radius on ``model``.

``attack`` (PGD, ``lipbound.attack.margin_attack``, l_inf or l_2): the smallest radius found by
bisection at which an adversarial point exists, an upper bound on the true robust radius of
``model``; certified radii of "bounds" and "lipschitz" never exceed it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lipbound.audit._common import float64_model, model_device, positive, run_batch
from lipbound.audit._radius import (
    BAB_TIMEOUT,
    attack_radius,
    bounds_radius,
    lipschitz_radius,
)
from lipbound.errors import InputError, ShapeError, UnknownMethodError, UnsupportedNormError
from lipbound.gradmode import outside_inference_mode
from lipbound.inputs import as_tensor, check_model
from lipbound.norms import parse_norm
from lipbound.progress import ProgressFlag, bar
from lipbound.smoothing import Smooth
from lipbound.specs import margin_spec

METHODS = ("bounds", "lipschitz", "smoothing")


@dataclass(frozen=True)
class RobustnessRecord:
    """One point: certified radius per method (0 when not certified or misclassified)."""

    index: int
    label: int
    prediction: int
    correct: bool
    radii: dict[str, float]
    times: dict[str, float]
    attack_radius: float | None
    attack_success: bool | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "prediction": self.prediction,
                "correct": self.correct, "radii": dict(self.radii), "times": dict(self.times),
                "attack_radius": self.attack_radius, "attack_success": self.attack_success,
                "details": dict(self.details)}


@dataclass(frozen=True)
class RobustnessReport:
    records: list[RobustnessRecord]
    methods: tuple[str, ...]
    norm: float
    eps_max: float
    radii: list[float]
    seed: int
    time: float

    def curves(self, radii: Any = None) -> dict[str, list[float]]:
        """Certified accuracy (fraction of points correct with radius >= rho) per method at
        each rho, and "attack": the fraction that the attack did not break at rho."""
        radii = self.radii if radii is None else [float(r) for r in radii]
        n = max(1, len(self.records))
        out = {m: [sum(r.correct and r.radii[m] >= rho for r in self.records) / n
                   for rho in radii] for m in self.methods}
        if any(r.attack_success is not None for r in self.records):
            out["attack"] = [sum(r.correct and (r.attack_radius is None or r.attack_radius > rho)
                                 for r in self.records) / n for rho in radii]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"audit": "robustness", "methods": list(self.methods),
                "norm": "inf" if self.norm == math.inf else self.norm, "eps_max": self.eps_max,
                "radii": self.radii, "curves": self.curves(), "seed": self.seed,
                "time": self.time, "records": [r.to_dict() for r in self.records]}


def _smoother(smooth: Any, model: nn.Module, K: int):
    if isinstance(smooth, Smooth):
        return smooth, {}
    if not isinstance(smooth, dict) or "sigma" not in smooth:
        raise InputError("smooth must be a lipbound.Smooth or a dict with a 'sigma' key")
    opts = dict(smooth)
    sm = Smooth(model, num_classes=K, sigma=opts.pop("sigma"))
    kw = {"n0": opts.pop("n0", 100), "n": opts.pop("n", 10_000),
          "alpha": opts.pop("alpha", 0.001), "batch_size": opts.pop("batch_size", 1000),
          "certificate": opts.pop("certificate", "cohen")}
    if opts:
        raise InputError(f"unknown smoothing options {sorted(opts)}")
    return sm, kw


def _inputs(model: nn.Module, X: Any, y: Any) -> tuple[Tensor, Tensor, Tensor]:
    X = as_tensor(X, "X").to(model_device(model))
    y = torch.as_tensor(y).to(X.device)
    if y.dim() != 1 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ShapeError(f"X must be [N, *in] and y [N] with N >= 1; got X {list(X.shape)}, "
                         f"y {list(y.shape)}")
    p = next(iter(model.parameters()), None)
    with torch.no_grad():
        logits = run_batch(model, X.to(p.dtype if p is not None else torch.float32))
    if y.is_floating_point() or bool(((y < 0) | (y >= logits.shape[1])).any()):
        raise InputError(f"labels y must be integers in 0..{logits.shape[1] - 1}")
    return X, y.long(), logits


@outside_inference_mode
def robustness(model: nn.Module, X: Any, y: Any, *, eps_max: float, norm: Any = math.inf,
               data_range: Any = None, methods: Any = ("bounds", "lipschitz", "smoothing"),
               smooth: Any = None, attack: bool = True, radii: Any = None,
               bisection_steps: int = 12, seed: int = 0, bab_timeout: float = BAB_TIMEOUT,
               progress: ProgressFlag = "auto") -> RobustnessReport:
    """Certified radii of every (X[i], y[i]) up to ``eps_max`` (see the module docstring).

    ``bab_timeout``: seconds per branch-and-bound call of the "bounds" method (0: CROWN only).
    """
    start = time.perf_counter()
    check_model(model)
    eps_max = positive("eps_max", eps_max)
    if isinstance(bab_timeout, bool) or not isinstance(bab_timeout, (int, float)) \
            or not bab_timeout >= 0:
        raise InputError(f"bab_timeout must be a number >= 0, got {bab_timeout!r}")
    steps = positive("bisection_steps", bisection_steps, integer=True)
    p = parse_norm(norm)
    methods = tuple(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UnknownMethodError(f"unknown robustness methods {bad}; choose from {METHODS}")
    if smooth is None:
        methods = tuple(m for m in methods if m != "smoothing")
    elif "smoothing" in methods and p != 2.0:
        raise UnsupportedNormError("randomized smoothing certifies l_2 radii: use norm=2")
    X, y, logits = _inputs(model, X, y)
    K = logits.shape[1]
    sm = _smoother(smooth, model, K) if "smoothing" in methods else None
    model64 = float64_model(model) if "lipschitz" in methods else None
    gen = torch.Generator().manual_seed(int(seed))
    can_attack = attack and p in (math.inf, 2.0)
    records = []
    for i in bar(range(X.shape[0]), progress=progress, desc="robustness", unit="point"):
        records.append(_one(model, model64, sm, X[i], int(y[i]), int(logits[i].argmax()), i,
                            methods, eps_max, p, data_range, steps, can_attack, gen, seed,
                            bab_timeout=float(bab_timeout)))
    curve = ([float(r) for r in radii] if radii is not None
             else [eps_max * k / 10 for k in range(11)])
    return RobustnessReport(records, methods, p, eps_max, curve, int(seed),
                            time.perf_counter() - start)


def _one(model, model64, sm, x, y, pred, index, methods, eps_max, p, data_range, steps,
         can_attack, gen, seed, bab_timeout: float = BAB_TIMEOUT) -> RobustnessRecord:
    radii, times, details = {}, {}, {}
    correct = pred == y
    t = time.perf_counter()
    att = None
    if can_attack:
        att = 0.0 if not correct else attack_radius(model, x, y, eps_max, p, data_range,
                                                     max(1, steps // 2), gen)
        times["attack"] = time.perf_counter() - t
    hi = eps_max if att is None else min(eps_max, att)
    C = margin_spec(y, model_out_dim(model, x), torch.float64, x.device)
    for m in methods:
        t = time.perf_counter()
        r = 0.0
        if m == "bounds" and correct:
            r, details["bounds_method"] = bounds_radius(model, x, C, hi, p, data_range, steps,
                                                        bab_timeout)
        elif m == "lipschitz" and correct:
            r = lipschitz_radius(model, model64, x, C, hi, p, data_range, steps)
        elif m == "smoothing":
            smooth, kw = sm
            c = smooth.certify(x, seed=int(seed) * 1_000_003 + index, **kw)
            details["smoothing_prediction"] = int(c.prediction)
            r = float(c.radius) if int(c.prediction) == y else 0.0
        radii[m] = float(r)
        times[m] = time.perf_counter() - t
    return RobustnessRecord(index, y, pred, correct, radii, times, att,
                            None if not can_attack else att is not None, details)


def model_out_dim(model: nn.Module, x: Tensor) -> int:
    p = next(iter(model.parameters()), None)
    with torch.no_grad():
        return run_batch(model, x.unsqueeze(0).to(p.dtype if p is not None else x.dtype)
                         ).shape[1]
