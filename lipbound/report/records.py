"""Build schema records (see :mod:`lipbound.report.schema`) from lipbound's results.

One builder per producer: :func:`output_bounds_record` (``lipbound.output_bounds``),
:func:`lipschitz_record` (``LipschitzResult``), :func:`smoothing_record` (a smoothing
``Certification``: the one record smoothing writes), :func:`weights_record`
(``lipbound.audit.weights``); the audit reports have theirs in
:mod:`lipbound.report.audit_records`. Every builder returns a JSON-ready dict that
:func:`~lipbound.report.schema.validate` accepts; bounds are copied as computed (never rounded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lipbound.jsonutil import jsonable
from lipbound.report.provenance import (
    device_of,
    environment,
    lipbound_version,
    model_hash,
    tensor_hash,
)
from lipbound.report.schema import SCHEMA_VERSION

CENTER_VALUES_MAX = 256  # inputs with at most this many entries are written out in full


def norm_name(norm: Any) -> Any:
    """``"inf"`` for the l_inf norm, else the number (2, 1)."""
    p = float("inf") if str(norm) == "inf" else float(norm)
    return "inf" if math.isinf(p) else (int(p) if p.is_integer() else p)


def header(kind: str, model: nn.Module, *, status: str, time: float, model_name: str | None,
           seed: int | None = None, dtype: Any = "float64") -> dict[str, Any]:
    """The keys common to every record."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "lipbound": lipbound_version(),
        "environment": environment(),
        "device": device_of(model),
        "seed": None if seed is None else int(seed),
        "dtype": str(dtype).removeprefix("torch."),
        "model": {"hash": model_hash(model), "name": model_name},
        "status": status,
        "time": float(time),
    }


def ball_domain(x: Any, eps: Any, norm: Any, data_range: Any = None) -> dict[str, Any]:
    """Domain of an l_p ball of radius ``eps`` around ``x`` (values written for small x)."""
    x = torch.as_tensor(x).detach()
    dom = {"norm": norm_name(norm), "eps": jsonable(eps), "center_hash": tensor_hash(x),
           "data_range": None if data_range is None else jsonable(list(data_range))}
    if x.numel() <= CENTER_VALUES_MAX:
        dom["center"] = jsonable(x.reshape(-1))
    return dom


def box_domain(lower: Any, upper: Any) -> dict[str, Any]:
    """Domain of the box ``[lower, upper]`` (corners written in full)."""
    lo, up = torch.as_tensor(lower).detach(), torch.as_tensor(upper).detach()
    return {"norm": "box", "eps": None, "center_hash": tensor_hash(torch.stack([lo, up])),
            "data_range": None, "lower": jsonable(lo.reshape(-1)),
            "upper": jsonable(up.reshape(-1))}


def spec_info(spec: Any, num_outputs: int | None = None) -> dict[str, Any]:
    """Describe a spec: ``None`` -> identity; a dict is taken as is; a matrix is written out."""
    if spec is None:
        return {"type": "identity", "rows": num_outputs}
    if isinstance(spec, dict):
        return jsonable(spec)
    C = torch.as_tensor(spec)
    return {"type": "matrix", "rows": int(C.shape[0]), "matrix": jsonable(C)}


def gap(upper: Any, lower: Any) -> float | None:
    """``max(upper - lower)`` over rows, or None when either side is missing."""
    if upper is None or lower is None:
        return None
    d = torch.as_tensor(upper, dtype=torch.float64) - torch.as_tensor(lower, dtype=torch.float64)
    return float(d.max()) if d.numel() else None


def _scalar(v: Any) -> float | None:
    """A float from a number or a tensor (its max: the bound over all rows)."""
    if v is None:
        return None
    return float(torch.as_tensor(v).max()) if not isinstance(v, (int, float)) else float(v)


def bound_keys(domain: dict, spec: dict, method: str, settings: dict | None, upper: Any,
               lower: Any) -> dict[str, Any]:
    """The keys of a bound record (see :mod:`lipbound.report.schema`): what was bounded where,
    how, and the bounds with their gap."""
    return {"domain": domain, "spec": spec, "method": method,
            "settings": jsonable(settings or {}), "upper": jsonable(upper),
            "lower": jsonable(lower), "gap": jsonable(gap(upper, lower))}


def output_bounds_record(model: nn.Module, x: Any, eps: float, bounds: Sequence, *,
                         norm: Any = "inf", data_range: Any = None, spec: Any = None,
                         method: str = "crown", settings: dict | None = None, time: float = 0.0,
                         seed: int | None = None, model_name: str | None = None,
                         input: dict | None = None, dtype: Any = "float64") -> dict[str, Any]:
    """Record of ``lower[s] <= C_s f(x') <= upper[s]`` over the ball (``bounds`` = (lo, up))."""
    lo, up = (torch.as_tensor(b).detach() for b in bounds)
    rec = header("output_bounds", model, status="certified", time=time, model_name=model_name,
                 seed=seed, dtype=dtype)
    rec.update(bound_keys(ball_domain(x, eps, norm, data_range),
                          spec_info(spec, lo.shape[-1]), method, settings, up, lo))
    if input is not None:
        rec["input"] = jsonable(input)
    return rec


def lipschitz_record(model: nn.Module, x: Any, result: Any, *, spec: Any = None,
                     data_range: Any = None, settings: dict | None = None,
                     seed: int | None = None, model_name: str | None = None,
                     input: dict | None = None, dtype: Any = "float64") -> dict[str, Any]:
    """Record of a :class:`~lipbound.results.LipschitzResult` (upper certified, lower attained).

    An anytime curve in ``result.details["trace"]`` (``[(t, upper, lower, ...), ...]``, from
    method "bab") is kept as the record's ``trace``.
    """
    rec = header("lipschitz", model, status=result.status, time=result.time,
                 model_name=model_name, seed=seed, dtype=dtype)
    rec.update(bound_keys(ball_domain(x, result.eps, result.norm, data_range),
                          spec_info(spec, int(result.upper.numel())), result.method, settings,
                          result.upper, result.lower))
    details = result.to_dict().get("details", {})
    trace = details.pop("trace", None)
    if trace:  # (t, upper, lower[, domains]) points of the anytime curve
        rec["trace"] = [[jsonable(_scalar(v)) for v in p[:3]] for p in trace]
    rec["details"] = jsonable({**details, "value": result.value,
                               "lower_value": float(result.lower.max())})
    if input is not None:
        rec["input"] = jsonable(input)
    return rec


def smoothing_record(model: nn.Module, x: Any, cert: Any, *, sigma: float,
                     settings: dict | None = None, seed: int | None = None,
                     model_name: str | None = None, label: int | None = None,
                     index: int | None = None) -> dict[str, Any]:
    """Record of a smoothing ``Certification`` (what ``lipbound certify`` and
    ``lipbound.smoothing.dataset.certify_one`` write): the certified l2 radius is ``lower``
    (the smoothed classifier's prediction is constant on the l2 ball of that radius); ``upper``
    is null; ``status`` is "abstain" or "certified"; ``seed`` defaults to the certificate's
    (``details["seed"]``). Besides the schema keys it carries the smoothing row: ``idx``,
    ``label``, ``predict`` (-1 = abstain), ``radius``, ``correct``, ``certificate``, ``time``,
    ``details`` (the keys of Cohen et al.'s TSV and of the certificate's details)."""
    predict = int(cert.prediction)
    correct = None if label is None else bool(predict == label)
    row = jsonable({"idx": index, "label": label, "predict": predict, "radius": cert.radius,
                    "correct": correct, "certificate": cert.certificate, "time": cert.time,
                    "details": cert.details})
    if seed is None:
        seed = (cert.details or {}).get("seed")
        seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    rec = header("smoothing", model, status="abstain" if predict < 0 else "certified",
                 time=float(cert.time), model_name=model_name, seed=seed, dtype="float32")
    spec = {"type": "smoothed_class", "prediction": predict, "certificate": cert.certificate}
    radius = float(cert.radius)
    rec.update(bound_keys(ball_domain(x, radius, 2), spec, str(cert.certificate),
                          {"sigma": sigma, **(settings or {})}, None, radius))
    rec["input"] = jsonable({"index": index, "label": label, "correct": correct})
    return {**row, **rec}


def weights_record(model: nn.Module, layers: Sequence, *, model_name: str | None = None,
                   time: float = 0.0) -> dict[str, Any]:
    """Record of a weight audit (``lipbound.audit.weights(model)``: LayerStats per layer)."""
    rec = header("weights", model, status="done", time=time, model_name=model_name)
    rec["layers"] = [jsonable({"name": s.name, "kind": s.kind, "shape": list(s.shape),
                               "spectral_norm": s.spectral_norm,
                               "condition_number": s.condition_number,
                               "sparsity": s.sparsity}) for s in layers]
    return rec
