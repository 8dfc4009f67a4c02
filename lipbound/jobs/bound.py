"""The per-input bound job: certified output bounds and the local Lipschitz constant of one
input, for :meth:`lipbound.executor.Executor.map` (``lipbound bound`` runs it over a data set).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from lipbound.api import local_lipschitz, output_bounds
from lipbound.errors import InputError
from lipbound.jobs.models import ModelRef, resident_model, resolve_device, split_item
from lipbound.report.records import lipschitz_record, output_bounds_record
from lipbound.results import LipschitzResult
from lipbound.specs import margin_spec

#: output-bound methods (for the default ``bounds_method``)
BOUND_METHODS = ("ibp", "crown", "alpha-crown", "bab")


@dataclass
class BoundJob:
    """``job(item, seed) -> dict``: certified bounds over ``{x' : ||x' - x||_norm <= eps}``
    (∩ ``data_range``) around one input ``x`` [*in].

    ``item``: ``x``, ``(x, label)`` or ``(x, label, row)``. ``method``: the local Lipschitz
    method (``lipbound.local_lipschitz``; ``"none"`` skips it); with ``output_bounds=True`` also
    output bounds (``lipbound.output_bounds`` with ``bounds_method``, default ``method`` where
    output bounds have it, else "crown"). ``spec``: None / ``"identity"`` (the outputs) or
    ``"margin"`` (rows ``e_label - e_j``, j != label; the label is the item's, else the model's
    prediction). ``timeout``: branch-and-bound's anytime budget (method "bab") per call; the
    executor's timeout stops the whole job. ``precision``: the dtype of CROWN's backward
    coefficients, as in the two API functions ("float32" has a proven per-step allowance).
    ``seed`` drives the sampling of the attained Lipschitz lower bound.

    The result (JSON-ready): ``label``, ``prediction`` (argmax of the outputs; None for one
    output), ``seed``, ``spec`` (None, or the margin rows' description), ``lipschitz``
    (:meth:`LipschitzResult.to_dict`), and with output bounds ``lower``, ``upper`` and ``time``
    (their seconds). The guarantees are those of the two API functions. :meth:`records` turns a
    result into report-schema records.
    """

    model: ModelRef
    eps: float
    norm: float | str = "inf"
    method: str = "crown"
    spec: str | None = None
    data_range: tuple[float, float] | None = None
    timeout: float | None = None
    output_bounds: bool = False
    bounds_method: str | None = None
    device: str = "auto"
    precision: str = "float64"

    def output_method(self) -> str:
        """The output-bound method."""
        if self.bounds_method is not None:
            return self.bounds_method
        return self.method if self.method in BOUND_METHODS else "crown"

    def __call__(self, item: Any, seed: int) -> dict[str, Any]:
        x, label, _ = split_item(item)
        model = resident_model(self.model, self.device)
        x = torch.as_tensor(x).to(resolve_device(self.device))
        C, spec, pred = self._spec(model, x, label)
        out: dict[str, Any] = {"label": label, "prediction": pred, "seed": seed, "spec": spec}
        if self.output_bounds:
            method = self.output_method()
            extra = ({"timeout": self.timeout, "progress": False} if method == "bab"
                     else {"precision": self.precision})
            start = time.perf_counter()
            lo, up = output_bounds(model, x, self.eps, norm=self.norm, spec=C, method=method,
                                   data_range=self.data_range, **extra)
            out.update(lower=lo.tolist(), upper=up.tolist(), time=time.perf_counter() - start)
        if self.method != "none":
            res = local_lipschitz(model, x, self.eps, norm=self.norm, spec=C,
                                  method=self.method, timeout=self.timeout,
                                  data_range=self.data_range, seed=seed, progress=False,
                                  precision=self.precision)
            out["lipschitz"] = res.to_dict()
        return out

    def _spec(self, model: torch.nn.Module, x: torch.Tensor, label: int | None
              ) -> tuple[torch.Tensor | None, dict | None, int | None]:
        """(spec matrix or None, its description, the model's prediction)."""
        param = next(model.parameters(), None)
        with torch.no_grad():
            out = model(x.unsqueeze(0).to(param.dtype if param is not None else x.dtype))[0]
        k = int(out.numel())
        pred = int(out.argmax()) if k > 1 else None
        if self.spec in (None, "identity"):
            return None, None, pred
        if self.spec != "margin":
            raise InputError(f"spec must be None, 'identity' or 'margin', got {self.spec!r}")
        if k < 2:
            raise InputError("spec 'margin' (--spec margin) needs a classifier with at least "
                             "2 outputs")
        target = pred if label is None else label
        C = margin_spec(target, k)
        return C, {"type": "margin", "label": target, "rows": k - 1, "matrix": C.tolist()}, pred

    def records(self, model: torch.nn.Module, x: Any, result: dict[str, Any], *,
                model_name: str | None = None, input: dict | None = None) -> list[dict]:
        """The report-schema records of one result (``output_bounds`` when computed, then
        ``lipschitz`` when computed); ``input`` goes into each record (index, label...)."""
        recs = []
        if "lower" in result:
            bounds = [torch.tensor(result[k], dtype=torch.float64) for k in ("lower", "upper")]
            recs.append(output_bounds_record(
                model, x, self.eps, bounds, norm=self.norm, data_range=self.data_range,
                spec=result["spec"], method=self.output_method(), time=result["time"],
                seed=result["seed"], model_name=model_name, input=input))
        if "lipschitz" in result:
            recs.append(lipschitz_record(
                model, x, LipschitzResult.from_dict(result["lipschitz"]), spec=result["spec"],
                data_range=self.data_range,
                settings={"timeout": self.timeout, "precision": self.precision},
                seed=result["seed"], model_name=model_name, input=input))
        return recs
