"""Public entry points that run the same under any autograd mode of the caller.

lipbound needs autograd internally (vector-Jacobian products, attained points, alpha/beta
optimisation), which ``torch.inference_mode`` forbids, and tensors created under it
("inference tensors") cannot be saved for backward even after the mode is left. Entry points
therefore leave inference mode for their own work: every tensor they build (and keep in a
cache) is a normal tensor, and inference tensors the caller passes in (the input, weights of a
model built under inference mode) are only read, never saved for backward.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

P = ParamSpec("P")
R = TypeVar("R")


def outside_inference_mode(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run with ``torch.inference_mode`` off (grad mode as the caller set it)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not torch.is_inference_mode_enabled():
            return fn(*args, **kwargs)
        with torch.inference_mode(False):
            return fn(*args, **kwargs)

    return wrapper
