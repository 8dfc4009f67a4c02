"""Schema records from the audit reports of :mod:`lipbound.audit`.

- :func:`monotonicity_records`: one ``monotonicity`` record per feature; ``lower`` / ``upper``
  are the certified bounds on d output / d feature over the box, ``status`` is the verdict.
- :func:`robustness_records`: one ``certified_radius`` record per input and method; ``lower``
  is the certified radius, ``upper`` the radius at which an attack found an adversarial
  example (or null), so the true minimal adversarial radius lies in [lower, upper].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lipbound.jsonutil import jsonable
from lipbound.report.records import ball_domain, bound_keys, box_domain, header, norm_name


def monotonicity_records(model: nn.Module, report: Any, lower: Any, upper: Any, *,
                         output: int = 0, feature_names: Sequence[str] | None = None,
                         settings: dict | None = None, seed: int | None = None,
                         model_name: str | None = None) -> list[dict[str, Any]]:
    """Records of a ``MonotonicityReport`` over the box ``[lower, upper]``; ``details`` keeps
    the witness (and support point) with their autograd derivatives."""
    domain = box_domain(lower, upper)
    method = str(getattr(report, "method", "jacobian-bab"))
    settings = {"tol": getattr(report, "tol", None), **(settings or {})}
    out = []
    for fv in report.features:
        j = int(fv.feature)
        spec = {"type": "partial_derivative", "output": int(output), "feature": j}
        if feature_names is not None and j < len(feature_names):
            spec["feature_name"] = str(feature_names[j])
        rec = header("monotonicity", model, status=str(fv.verdict), time=fv.time,
                     model_name=model_name, seed=seed)
        rec.update(bound_keys(dict(domain), spec, method, settings,
                              float(fv.derivative_upper), float(fv.derivative_lower)))
        info = fv.to_dict() if hasattr(fv, "to_dict") else {
            "witness": fv.witness, "witness_derivative": fv.witness_derivative,
            "domains": fv.domains}
        rec["details"] = jsonable({k: v for k, v in info.items() if k not in (
            "feature", "verdict", "derivative_lower", "derivative_upper", "time")})
        out.append(rec)
    return out


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def robustness_records(model: nn.Module, report: Any, inputs: Any, *, norm: Any,
                       data_range: Any = None, model_name: str | None = None,
                       seed: int | None = None) -> list[dict[str, Any]]:
    """Records of a ``RobustnessReport`` on the rows ``inputs.X`` (an Inputs or a tensor)."""
    X = inputs.X if hasattr(inputs, "X") else torch.as_tensor(inputs)
    indices = None if isinstance(inputs, torch.Tensor) else getattr(inputs, "indices", None)
    out = []
    for rec in report.records:
        i = int(_field(rec, "index"))
        label, pred = _field(rec, "label"), _field(rec, "prediction")
        attack = _field(rec, "attack_radius")
        correct = label is not None and pred is not None and int(label) == int(pred)
        for method, radius in (_field(rec, "radii") or {}).items():
            r = header("certified_radius", model, status="certified" if correct else
                       "misclassified", time=float((_field(rec, "times") or {}).get(method, 0.0)),
                       model_name=model_name, seed=seed)
            r.update(bound_keys(ball_domain(X[i], None, norm, data_range),
                                {"type": "classification", "label": label},
                                method, {"norm": norm_name(norm)},
                                None if attack is None else float(attack), float(radius)))
            r["input"] = jsonable({"index": indices[i] if indices else i, "label": label,
                                   "prediction": pred, "correct": correct,
                                   "attack_success": _field(rec, "attack_success")})
            out.append(r)
    return out
