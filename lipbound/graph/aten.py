"""The tracer's ATen step: one exported call whose value depends on the input -> lipbound nodes.

Which ATen overloads lipbound converts, and into which nodes, is stated by the op modules
themselves (:mod:`lipbound.ops.tracing`: each registers a converter next to its op, so
``lipbound/ops/relu_like.py`` says that ``relu``, ``clamp_min`` and ``leaky_relu`` calls
become ``relu`` / ``leaky_relu`` nodes). This module only dispatches: calls on constants
only are evaluated right away; a tuple-valued call's ``getitem`` picks the part; every other
call goes to its op's converter, or is expanded through torch's decomposition
(:mod:`lipbound.graph.decompose`, for the composite calls listed there), or raises the
error that names the call, its place in the model and the supported calls.
:data:`HANDLERS` is the (read-only) table the ops filled.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from lipbound.errors import UnsupportedOperationError
from lipbound.graph.aten_builder import Builder, Var
from lipbound.graph.decompose import expand
from lipbound.ops import registry
from lipbound.ops.tracing import (
    ATEN,
    READS_COMPARISON,
    STACKED,
    Comparison,
    Refused,
    Stacked,
    aten_names,
    where_of,
)

__all__ = ["HANDLERS", "SUPPORTED", "Builder", "convert_node"]


def convert_node(b: Builder, fx: torch.fx.Node) -> None:
    """Convert one exported call: fold it if constant, else dispatch to its converter."""
    args, kwargs = b.resolve(fx.args), b.resolve(fx.kwargs)
    flat = list(args) + list(kwargs.values())
    flat = [v for a in flat for v in (a if isinstance(a, (list, tuple)) else [a])]
    if fx.target is operator.getitem and isinstance(args[0], tuple) and any(
            isinstance(a, (Var, Stacked, Refused)) for a in args[0]):
        b.vars[fx.name] = args[0][args[1]]  # a part of a call's result (perhaps refused)
        return
    refused = [a for a in flat if isinstance(a, Refused) and not (
        isinstance(a, Comparison) and str(fx.target) in READS_COMPARISON)]
    if refused:
        raise UnsupportedOperationError(str(fx.target), where_of(fx), aten_names(),
                                        hint=refused[0].why)
    if not any(isinstance(a, (Var, Stacked, Comparison)) for a in flat):
        b.consts[fx.name] = fx.target(*args, **kwargs)
        return
    if any(isinstance(a, Stacked) for a in flat):
        stacked = STACKED.get(str(fx.target))
        if stacked is None:
            raise UnsupportedOperationError(str(fx.target), where_of(fx), aten_names(), hint=(
                "Its input has the batch dimension second (a time-major sequence or an RNN's "
                "final states); lipbound takes such values only through indexing (h_n[-1], "
                "out[t]), transposing back to batch-first, sums / means over the first axis "
                "and recurrent layers."))
        stacked(b, fx, *_float64(args), **_float64(kwargs))
        return
    handler = ATEN.get(str(fx.target))
    if handler is None and expand(b, fx, args, kwargs, convert_node):
        return
    if handler is None:
        raise UnsupportedOperationError(
            str(fx.target), where_of(fx), aten_names(),
            hint="Rewrite the model with supported operators or open an issue.")
    # constants made in forward (torch.ones, torch.eye, ...) come in the model's dtype; the
    # graph's parameters are float64 (exact widening), so that rewrites round in float64
    handler(b, fx, *_float64(args), **_float64(kwargs))


def _float64(a: Any) -> Any:
    """Floating constant tensors in ``a`` (nested lists/tuples/dicts) widened to float64."""
    if isinstance(a, Tensor):
        return a.double() if a.is_floating_point() else a
    if isinstance(a, (list, tuple)):
        return type(a)(_float64(v) for v in a)
    if isinstance(a, dict):
        return {k: _float64(v) for k, v in a.items()}
    return a


registry.load_all()
#: ATen overload -> converter, as the op modules registered them (a read-only view)
HANDLERS: Mapping[str, Callable[..., Any]] = MappingProxyType(ATEN)
#: the ATen overloads the ops convert when this module was imported (for messages)
SUPPORTED: list[str] = sorted(ATEN)
