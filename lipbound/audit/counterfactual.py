"""Counterfactual stability: how far can the model's output move near a counterfactual?

For a counterfactual x_cf and the ball B = {x : ||x - x_cf||_p <= eps} (∩ data_range), the rows
g_s are either the margins of the counterfactual's class c (``output=None``: g_k = f_c - f_k,
k != c) or the single output ``f_output``. Two certified bounds on
``sup_{x in B} |g_s(x) - g_s(x_cf)|`` are computed and the tighter is reported:

* Lipschitz: ``L_s * eps`` with L_s the certified local constant of g_s over B (dual norm of
  the gradient; mean-value inequality on the convex set B);
* direct: ``max(g_s(x_cf) - lower_s, upper_s - g_s(x_cf))`` from certified output bounds.

``certified_min[s]`` is a certified lower bound of g_s over B (the larger of
``g_s(x_cf) - L_s eps`` and ``lower_s``); for margins, ``stable`` is True when every
certified_min is > 0: every point of B is classified c. ``lower_change`` is attained: the
largest |g_s(x) - g_s(x_cf)| at points found by PGD inside B (``witness``: the point with the
smallest g, i.e. closest to a class flip), so the true change lies in
[lower_change, upper_change].
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lipbound.api import local_lipschitz, output_bounds
from lipbound.attack import box_minimize
from lipbound.audit._common import float64_model, model_device, to_list
from lipbound.bounds.domains import make_domain
from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import Precision, outward
from lipbound.errors import InputError, UnknownMethodError
from lipbound.gradmode import outside_inference_mode
from lipbound.inputs import as_tensor, batched_input, check_eps, check_model, get_traced
from lipbound.propagate.rounding import execution_error
from lipbound.specs import margin_spec


@dataclass(frozen=True)
class CounterfactualStability:
    prediction: int
    rows: list[str]
    value: Tensor
    upper_change: Tensor
    lipschitz: Tensor
    lipschitz_change: Tensor
    bounds_change: Tensor
    certified_min: Tensor
    lower_change: Tensor
    witness: Tensor
    stable: bool | None
    eps: float
    norm: float
    method: str
    time: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "prediction": self.prediction, "rows": self.rows, "value": to_list(self.value),
            "upper_change": to_list(self.upper_change), "lipschitz": to_list(self.lipschitz),
            "lipschitz_change": to_list(self.lipschitz_change),
            "bounds_change": to_list(self.bounds_change),
            "certified_min": to_list(self.certified_min),
            "lower_change": to_list(self.lower_change), "witness": to_list(self.witness),
            "stable": self.stable, "eps": self.eps,
            "norm": "inf" if self.norm == math.inf else self.norm, "method": self.method,
            "time": self.time,
        }


def _bounds(model, x, eps, norm, C, data_range, method):
    """(Lipschitz constants [S], output lower [S], output upper [S], method used)."""
    try:
        lip = local_lipschitz(model, x, eps, norm=norm, spec=C, method=method,
                              data_range=data_range, n_samples=1).upper
        ob = output_bounds(model, x, eps, norm=norm, spec=C, method=method,
                           data_range=data_range)
        return lip, ob.lower, ob.upper, method
    except UnknownMethodError:
        if method != "bab":
            raise
        return _bounds(model, x, eps, norm, C, data_range, "alpha-crown")


def _attained(model64, x, eps, p, C, data_range, g0):
    """Largest |g_s(x') - g_s(x_cf)| found per row (l_inf: vertex steps, then PGD,
    :func:`~lipbound.attack.box_minimize`; l_2: PGD), and the min-margin point."""
    dom = make_domain(x.unsqueeze(0), eps, p, data_range)
    box = dom.interval()
    lo, hi = box.lower[0], box.upper[0]
    l2 = p == 2.0
    gen = torch.Generator().manual_seed(0)
    change = torch.zeros_like(g0)
    witness, wv = x, math.inf
    for s in range(C.shape[0]):
        for sign in (1.0, -1.0):
            def fn(z, s=s, sign=sign):
                return sign * (model64(z) @ C[s])
            z, v = box_minimize(fn, lo, hi, center=x if l2 else None,
                                radius2=eps if l2 else None, x_init=x, generator=gen,
                                restarts=4, steps=30)
            with torch.no_grad():
                gz = (model64(z.unsqueeze(0)) @ C.T)[0]
            change = torch.maximum(change, (gz - g0).abs())
            if float(gz.min()) < wv:
                witness, wv = z, float(gz.min())
    return change, witness


@outside_inference_mode
def counterfactual_stability(model: nn.Module, x_cf: Any, eps: float, norm: Any = math.inf,
                             output: int | None = None, data_range: Any = None,
                             method: str = "crown") -> CounterfactualStability:
    """Certified bound on how far the output (or the class-c margins) can move within eps of
    the counterfactual ``x_cf`` (see the module docstring)."""
    start = time.perf_counter()
    check_model(model)
    eps = check_eps(eps)
    x = as_tensor(x_cf, "x_cf").to(model_device(model), torch.float64)
    x = batched_input(model, x)[0]
    model64 = float64_model(model)
    with torch.no_grad():
        f = model64(x.unsqueeze(0))[0]
    K = f.shape[0]
    pred = int(f.argmax())
    if output is None:
        C = margin_spec(pred, K, torch.float64, x.device)
        rows = [f"f{pred} - f{k}" for k in range(K) if k != pred]
    else:
        if isinstance(output, bool) or not isinstance(output, int) or not 0 <= output < K:
            raise InputError(f"output must be None or an integer in 0..{K - 1}, got {output!r}")
        C = torch.zeros(1, K, dtype=torch.float64, device=x.device)
        C[0, output] = 1.0
        rows = [f"f{output}"]
    p = make_domain(x.unsqueeze(0), eps, norm, data_range).p
    lip, lo, up, used = _bounds(model, x, eps, p, C, data_range, method)
    g0 = C @ f
    lip_change = lip.double() * eps
    bnd_change = torch.maximum(g0 - lo, up - g0)
    g0_err = _forward_error(model, x, C)  # g0 is model64's float64 forward pass
    cmin, upper = outward(torch.maximum(g0 - lip_change - g0_err, lo),
                          torch.minimum(lip_change, bnd_change + g0_err))
    low, witness = _attained(model64, x, eps, p, C, data_range, g0)
    stable = bool((cmin > 0).all()) if output is None else None
    return CounterfactualStability(pred, rows, g0, upper, lip.double(), lip_change, bnd_change,
                                   cmin, low, witness, stable, eps, p, used,
                                   time.perf_counter() - start)


def _forward_error(model: nn.Module, x: Tensor, C: Tensor) -> Tensor:
    """Bound [S] on |C f64(x) - C f(x)|: the rounding of a float64 forward pass at x."""
    traced = get_traced(model, x.unsqueeze(0), torch.float64, x.device)
    err = execution_error(traced.raw, Interval.point(x.unsqueeze(0)), Precision.of(torch.float64))
    return C.abs() @ err.flatten()
