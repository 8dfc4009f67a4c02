"""The per-input job of ``lipbound bound`` over a data set: output bounds and the local
Lipschitz constant of one input, as schema records (``lipbound.report.records``).

The job carries the model *source* (registry name, ``module:factory`` with a state dict, or a
file, made absolute), so a worker process loads the model once and keeps it resident; in the
calling process the already-loaded module is used (it is not pickled).
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch


@functools.lru_cache(maxsize=4)
def load_source(source: str, state_dict: str | None) -> torch.nn.Module:
    """The model of a CLI model source, loaded once per process."""
    from lipbound.cli.loading import load_model

    return load_model(source, state_dict).module


def absolute(path: str | None) -> str | None:
    """An existing file's absolute path (workers may run in another directory); else as is."""
    return os.path.abspath(path) if path is not None and os.path.exists(path) else path


class SourceModel:
    """Mixin for jobs that name their model by a CLI source (``source``, ``state_dict``) and
    may hold it in ``module``: pickling drops the module, workers load it on first use."""

    source: str
    state_dict: str | None
    module: torch.nn.Module | None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["module"] = None  # workers load the model from its source
        return state

    def model(self) -> torch.nn.Module:
        if self.module is None:
            self.module = load_source(self.source, self.state_dict)
        return self.module


@dataclass
class BoundJob(SourceModel):
    """``job((x, label, source_index), seed) -> [output-bounds record, lipschitz record]``.

    The records' guarantees are those of ``lipbound.output_bounds`` and
    ``lipbound.local_lipschitz``; ``seed`` only drives the attained lower bound's sampling.
    """

    source: str
    state_dict: str | None
    model_name: str
    input_source: str
    eps: float
    norm: float
    method: str
    lipschitz_method: str
    spec: str
    timeout: float | None
    data_range: tuple[float, float] | None
    module: torch.nn.Module | None = field(default=None, repr=False)

    @classmethod
    def from_cli(cls, args: Any, loaded: Any, input_source: str, norm: float,
                 data_range: Any) -> BoundJob:
        """The job of parsed CLI arguments; eps and timeout are checked (as the API checks
        them) once here, before any input runs."""
        from lipbound.inputs import check_eps, check_timeout

        return cls(absolute(args.model), absolute(args.state_dict), loaded.name, input_source,
                   check_eps(args.eps), norm, args.method, args.lipschitz_method, args.spec,
                   check_timeout(args.timeout), data_range, loaded.module)

    def __call__(self, item: Any, seed: int) -> list[dict[str, Any]]:
        import lipbound
        from lipbound.cli.basic import _spec
        from lipbound.report.records import lipschitz_record, output_bounds_record

        x, label, index = item
        model = self.model()
        C, spec_desc, pred = _spec(self.spec, model, x, label)
        meta = {"index": index, "label": label, "prediction": pred, "source": self.input_source}
        start = time.perf_counter()
        extra = {"timeout": self.timeout, "progress": False} if self.method == "bab" else {}
        bounds = lipbound.output_bounds(model, x, self.eps, norm=self.norm, spec=C,
                                        method=self.method, data_range=self.data_range, **extra)
        out = [output_bounds_record(
            model, x, self.eps, bounds, norm=self.norm, data_range=self.data_range,
            spec=spec_desc, method=self.method, time=time.perf_counter() - start, seed=seed,
            model_name=self.model_name, input=meta)]
        if self.lipschitz_method != "none":
            res = lipbound.local_lipschitz(model, x, self.eps, norm=self.norm, spec=C,
                                           method=self.lipschitz_method, timeout=self.timeout,
                                           data_range=self.data_range, seed=seed,
                                           progress=False)
            out.append(lipschitz_record(model, x, res, spec=spec_desc,
                                        data_range=self.data_range,
                                        settings={"timeout": self.timeout}, seed=seed,
                                        model_name=self.model_name, input=meta))
        return out
