"""Helpers shared by the audits: input validation and float64 re-evaluation of a model."""

from __future__ import annotations

import copy
import numbers
from typing import Any

import torch
from torch import Tensor, nn

from lipbound.errors import InputError
from lipbound.graph.trace import Column
from lipbound.inputs import as_tensor


def model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def float64_model(model: nn.Module) -> nn.Module:
    """An eval-mode float64 copy of ``model`` on the model's device (for exact re-checks),
    with outputs [B, K] (one output per sample as [B, 1]: :class:`Column`)."""
    return Column(copy.deepcopy(model).double().eval())


def positive(name: str, value: Any, integer: bool = False) -> float | int:
    """``value`` as a positive number (an int if ``integer``); InputError otherwise."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        what = "an integer >= 1" if integer else "a positive number"
        raise InputError(f"{name} must be {what}, got {value!r}")
    return int(value) if integer else float(value)


def box_bounds(lower: Any, upper: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    """Validated float64 (lower, upper) of equal shape with lower <= upper elementwise."""
    lo = as_tensor(lower, "lower").to(device=device, dtype=torch.float64)
    hi = as_tensor(upper, "upper").to(device=device, dtype=torch.float64)
    if lo.shape != hi.shape:
        raise InputError(f"lower {list(lo.shape)} and upper {list(hi.shape)} differ in shape")
    if lo.numel() == 0:
        raise InputError("lower and upper are empty")
    bad = (lo > hi).flatten().nonzero()
    if bad.numel():
        i = int(bad[0])
        raise InputError(f"lower > upper at flat index {i} ({float(lo.flatten()[i])} > "
                         f"{float(hi.flatten()[i])}); the box is empty")
    return lo, hi


def run_batch(model: nn.Module, x: Tensor) -> Tensor:
    """``model`` on a batch ``x [R, *in]``: its output [R, K] (one output per sample, [R],
    as [R, 1]; any dtype conversion by caller)."""
    out = model(x)
    if isinstance(out, Tensor) and out.dim() == 1 and out.shape[0] == x.shape[0]:
        out = out.unsqueeze(-1)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise InputError(f"the model must map [B, *in] to [B, K] or [B]; got output {shape}")
    return out


def to_list(t: Tensor | None) -> list | None:
    return None if t is None else t.detach().cpu().tolist()
