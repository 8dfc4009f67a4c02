"""Common types of the smoothing certificates.

A certificate works in two steps that see disjoint samples:

1. ``plan(ctx, selection, alpha)`` looks only at the ``n0`` selection samples and fixes every
   choice (the class, a simplex map and temperature, a radius R...). It returns a ``Plan`` with
   the consumers that will accumulate statistics over the ``n`` estimation samples and a
   ``score``: the radius it expects to certify (used by ``best`` in ``select`` mode).
2. ``finish(ctx, plan)`` turns the accumulated statistics into a ``Certification`` whose
   confidence is ``1 - plan.alpha``.

Because the choices are fixed before the estimation samples are drawn, each certificate's
guarantee is the plain one-shot guarantee of its bounds; several certificates that share the
estimation samples (``best``) split alpha with a union bound.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from lipbound.jsonutil import jsonable
from lipbound.smoothing.sampling import Consumer, Evaluator, Samples


@dataclasses.dataclass
class Certification:
    """Result of ``Smooth.certify``: ``prediction`` (-1 = abstain), l2 ``radius``, the name of
    the certificate that produced it and JSON-ready ``details``."""

    prediction: int
    radius: float
    certificate: str
    details: dict = dataclasses.field(default_factory=dict)
    time: float = 0.0

    @property
    def abstained(self) -> bool:
        return self.prediction < 0

    def to_dict(self) -> dict:
        return jsonable(
            {
                "prediction": self.prediction,
                "radius": self.radius,
                "certificate": self.certificate,
                "time": self.time,
                "details": self.details,
            }
        )


@dataclasses.dataclass
class Context:
    """What a certificate may use: the smoothing setup and the sample budget."""

    x: torch.Tensor
    sigma: float
    num_classes: int
    n0: int
    n: int
    batch_size: int
    evaluator: Evaluator
    seed: int

    @property
    def model(self) -> torch.nn.Module:
        return self.evaluator.model


@dataclasses.dataclass
class Plan:
    """Choices made on the selection samples, and the consumers for the estimation samples."""

    certificate: Certificate
    label: int
    alpha: float
    consumers: list[Consumer]
    score: float = -math.inf
    state: dict[str, Any] = dataclasses.field(default_factory=dict)


class Certificate(ABC):
    """Base class; subclasses set ``name`` and implement ``plan`` and ``finish``."""

    name: ClassVar[str] = ""

    @abstractmethod
    def plan(self, ctx: Context, selection: Samples, alpha: float) -> Plan: ...

    @abstractmethod
    def finish(self, ctx: Context, plan: Plan) -> Certification: ...

    def check(self, ctx: Context) -> str | None:
        """Why this certificate cannot run on ``ctx``'s model, or None if it can. Forward-only
        certificates (the default) run any eval-mode classifier; those that need bounds or a
        Lipschitz constant need a model the bound engine can trace. ``best`` skips a
        candidate whose check fails and records the reason in ``details["skipped"]``."""
        return None

    def describe(self) -> dict:
        """The certificate's settings (JSON-ready), recorded in ``details['settings']``."""
        return {}


def abstain(name: str, details: dict) -> Certification:
    return Certification(prediction=-1, radius=0.0, certificate=name, details=details)


def shave(r: float) -> float:
    """Round a radius down by a relative 1e-12 (float rounding of Phi^-1 and products)."""
    return r - abs(r) * 1e-12
