"""Picklable per-input jobs for :meth:`lipbound.executor.Executor.map`: ``job(item, seed)``.

- :class:`BoundJob`: certified output bounds and the local Lipschitz constant of one input
  (``lipbound bound``);
- :class:`CertifyJob`: randomized-smoothing certification of one input (``lipbound certify``);
- :class:`RobustnessJob`: the robustness audit of one labelled input
  (``lipbound audit robustness``).

A job names its model by registry name, :class:`ModelSource` or module
(:mod:`lipbound.jobs.models`); workers load names and sources once and keep them resident.
The executors (:mod:`lipbound.executor`) run any job; these sit above the API, smoothing and
audits and below the command line.
"""

from lipbound.jobs.bound import BoundJob
from lipbound.jobs.certify import CertifyJob
from lipbound.jobs.models import ModelRef, ModelSource, resident_model, resolve_device
from lipbound.jobs.robustness import RobustnessJob

__all__ = ["BoundJob", "CertifyJob", "ModelRef", "ModelSource", "RobustnessJob",
           "resident_model", "resolve_device"]
