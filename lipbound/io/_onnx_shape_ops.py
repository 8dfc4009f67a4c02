"""Per-op converters of :func:`lipbound.io.load_onnx` that only move elements around.

Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Concat, Slice and Gather (constant
indices): each keeps every sample's values and
changes their ONNX shape (a per-sample reshape, permutation or concatenation); the batch layout
rules are those of :mod:`lipbound.io.onnx_loader`. Same calling convention as
:mod:`lipbound.io._onnx_ops`, whose table lists these converters too.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from lipbound.errors import InputError
from lipbound.io import _onnx_modules as M
from lipbound.io._onnx_graph import Const, Dyn

if TYPE_CHECKING:
    from lipbound.io.onnx_loader import _Converter


def flatten(cv: _Converter, ins, attrs):
    x = ins[0]
    axis = int(attrs.get("axis", 1))
    axis = axis + len(x.shape) if axis < 0 else axis
    shape = (math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
    return [cv.reshape(x, shape)]


def reshape(cv: _Converter, ins, attrs):
    x = ins[0]
    if cv.opset < 5:
        target = list(attrs["shape"])
    else:
        if not isinstance(ins[1], Const):
            cv.unsupported("the target shape must be a constant")
        target = [int(s) for s in ins[1].array.reshape(-1)]
    allowzero = int(attrs.get("allowzero", 0))
    target = [x.shape[i] if (s == 0 and not allowzero) else s for i, s in enumerate(target)]
    if target.count(-1) > 1:
        raise InputError(f"{cv.node_where}: target shape {target} has several -1")
    if -1 in target:
        known = math.prod(s for s in target if s != -1)
        target[target.index(-1)] = math.prod(x.shape) // known if known else 0
    return [cv.reshape(x, target)]


def squeeze(cv: _Converter, ins, attrs):
    x = ins[0]
    axes = _axes(cv, ins, attrs)
    rank = len(x.shape)
    if axes is None:
        axes = [i for i, s in enumerate(x.shape) if s == 1]
    axes = {a % rank for a in axes}
    return [cv.reshape(x, [s for i, s in enumerate(x.shape) if i not in axes])]


def unsqueeze(cv: _Converter, ins, attrs):
    x = ins[0]
    axes = _axes(cv, ins, attrs)
    rank = len(x.shape) + len(axes)
    axes = {a % rank for a in axes}
    it = iter(x.shape)
    return [cv.reshape(x, [1 if i in axes else next(it) for i in range(rank)])]


def _axes(cv: _Converter, ins, attrs):
    if "axes" in attrs:
        return list(attrs["axes"])
    if len(ins) > 1 and ins[1] is not None:
        if not isinstance(ins[1], Const):
            cv.unsupported("axes must be a constant")
        return [int(a) for a in ins[1].array.reshape(-1)]
    return None


def transpose(cv: _Converter, ins, attrs):
    x = ins[0]
    rank = len(x.shape)
    perm = [int(p) for p in attrs.get("perm", range(rank - 1, -1, -1))]
    if perm == list(range(rank)):
        return [x]
    out_shape = tuple(x.shape[p] for p in perm)
    lead = rank >= 2 and perm[0] == 0 and x.shape[0] == 1
    x = cv.layout(x, lead)
    torch_perm = tuple(perm) if lead else (0,) + tuple(p + 1 for p in perm)
    return [cv.emit(M.Permute(cv.step_name(), torch_perm), [x], out_shape, lead)]


def concat(cv: _Converter, ins, attrs):
    if any(not isinstance(v, Dyn) for v in ins):
        cv.unsupported("Concat with a constant operand")
    rank = len(ins[0].shape)
    axis = int(attrs["axis"]) % rank
    lead = rank >= 2 and axis != 0 and all(v.shape[0] == 1 for v in ins)
    xs = [cv.layout(v, lead) for v in ins]
    dim = axis if lead else axis + 1
    out_shape = list(xs[0].shape)
    out_shape[axis] = sum(v.shape[axis] for v in xs)
    return [cv.emit(M.Concat(cv.step_name(), dim), xs, tuple(out_shape), lead)]


def _consts(cv: _Converter, ins, first: int, what: str) -> list:
    """Optional constant int inputs ``ins[first:]`` as lists (None where omitted)."""
    out = []
    for v in ins[first:]:
        if v is not None and not isinstance(v, Const):
            cv.unsupported(f"{what} must be constants")
        out.append(None if v is None else [int(a) for a in v.array.reshape(-1)])
    return out


def slice_(cv: _Converter, ins, attrs):
    """Slice with constant starts / ends / axes / steps (positive steps)."""
    x = ins[0]
    rank = len(x.shape)
    if cv.opset < 10:
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes, steps = list(attrs.get("axes", range(len(starts)))), [1] * len(starts)
    else:
        starts, ends, axes, steps = (_consts(cv, ins, 1, "Slice bounds") + [None, None])[:4]
        axes = axes if axes is not None else list(range(len(starts)))
        steps = steps if steps is not None else [1] * len(starts)
    per = [None] * rank
    out = list(x.shape)
    for a, b, e, st in zip(axes, starts, ends, steps):
        a = a % rank
        if st <= 0:
            cv.unsupported("Slice with a non-positive step")
        rng = range(*slice(b, e, st).indices(x.shape[a]))
        per[a], out[a] = (rng.start, rng.stop, rng.step), len(rng)
    if out == list(x.shape):
        return [x]
    lead = rank >= 2 and x.shape[0] == 1 and per[0] is None
    x = cv.layout(x, lead)
    torch_slices = tuple(per[1:]) if lead else tuple(per)
    step = M.Slice(cv.step_name(), (None, *torch_slices))
    return [cv.emit(step, [x], tuple(out), lead)]


def gather(cv: _Converter, ins, attrs):
    """Gather along ``axis`` at constant indices (not along a batch axis)."""
    x, idx = ins
    if not isinstance(idx, Const):
        cv.unsupported("the indices must be constants")
    rank = len(x.shape)
    axis = int(attrs.get("axis", 0)) % rank
    index = np.asarray(idx.array).astype(np.int64)
    index = np.where(index < 0, index + x.shape[axis], index)
    lead = rank >= 2 and x.shape[0] == 1 and axis != 0
    x = cv.layout(x, lead)
    dim = axis if lead else axis + 1
    out = tuple(x.shape[:axis]) + tuple(index.shape) + tuple(x.shape[axis + 1:])
    step = M.Gather(cv.step_name(), dim, torch.from_numpy(index))
    return [cv.emit(step, [x], out, lead)]
