"""How an op module says which ATen calls it converts: the tracer's op table, filled by the ops.

An op module registers, next to its op, one converter per family of ATen overloads with
:func:`converts`; the tracer (:mod:`lipbound.graph.aten`) looks calls up in :data:`ATEN` and
knows no op by name. A converter ``f(b, fx, *args, **kwargs)`` gets the tracer's builder ``b``
(``b.add(fx, kind, inputs, params, shape=None)`` adds the node standing for ``fx``'s value,
``b.aux(fx, tag, kind, inputs, shape, params)`` a helper node, ``b.alias(fx, var)`` makes
``fx`` stand for an existing value, ``b.vars`` / ``b.nodes`` the values and nodes so far), the
exported call ``fx`` and its arguments, input-dependent ones as :class:`Var`. It raises
:func:`unsupported` for argument values it cannot convert. The helpers below are what
converters share: per-sample shapes, explicit broadcasts, reduction dims, constants as
per-sample tensors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lipbound.errors import UnsupportedOperationError

#: ATen overload name (``"aten.relu.default"``) -> its converter; filled by the op modules
ATEN: dict[str, Callable[..., Any]] = {}


def converts(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register the decorated converter for the ATen overloads ``names``."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in names:
            if not name.startswith("aten.") or name in ATEN:
                raise ValueError(f"bad or duplicate ATen overload {name!r}")
            ATEN[name] = fn
        return fn

    return register


def aten_converter(name: str) -> Callable[..., Any] | None:
    """The converter of ATen overload ``name`` (every op module loaded), or None."""
    from lipbound.ops import registry

    registry.load_all()
    return ATEN.get(name)


def aten_names() -> list[str]:
    """The ATen overloads some op converts, sorted (for error messages)."""
    from lipbound.ops import registry

    registry.load_all()
    return sorted(ATEN)


@dataclass(frozen=True)
class Var:
    """Reference to an input-dependent value (a lipbound node) during conversion."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Stacked:
    """Input-dependent per-sample values stacked along a leading dimension ahead of the batch
    (a time-major sequence [T, B, ...], an RNN's final states [layers*D, B, H]): ``parts[i]``
    is the value at index i (a Var or a constant). Only the calls in :data:`STACKED` take
    one (indexing, transposing back, sums over the leading dimension, recurrent layers)."""

    parts: tuple


#: ATen overload -> converter of calls that read a :class:`Stacked` value
STACKED: dict[str, Callable[..., Any]] = {}


def converts_stacked(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the converter of ATen overloads ``names`` when an argument is Stacked."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in names:
            if name in STACKED:
                raise ValueError(f"duplicate ATen overload {name!r}")
            STACKED[name] = fn
        return fn

    return register


@dataclass(frozen=True)
class Refused:
    """A part of a call's result lipbound does not compute (the indices of ``sort``): a call
    that reads it is refused with ``why``."""

    why: str


@dataclass(frozen=True)
class Comparison(Refused):
    """The boolean result of comparing input-dependent values: ``diff > 0`` (``strict``) or
    ``diff >= 0``, with ``diff`` a node. Only the calls in :data:`READS_COMPARISON` take one
    (:mod:`lipbound.ops.select`); any other call is refused with ``why``."""

    diff: Var | None = None
    strict: bool = True


#: ATen overloads that read a :class:`Comparison` (selections and negation)
READS_COMPARISON = frozenset({
    "aten.where.self", "aten.where.ScalarOther", "aten.where.ScalarSelf", "aten.where.Scalar",
    "aten.masked_fill.Scalar", "aten.masked_fill.Tensor", "aten.logical_not.default",
    "aten.bitwise_not.default", "aten._to_copy.default", "aten.to.dtype",
    "aten.to.dtype_layout", "aten._assert_tensor_metadata.default"})


def where_of(node: torch.fx.Node) -> str:
    """Human-readable location of an exported node in the user's model."""
    stack = node.meta.get("nn_module_stack") or {}
    parts = [f"node {node.name!r}"]
    if stack:
        path, cls = list(stack.values())[-1]
        cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
        parts.append(f"module {path.replace(chr(76) + chr(91), '')!r} ({cls_name.split('.')[-1]})")
    trace = node.meta.get("stack_trace")
    if trace:
        lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
        if len(lines) >= 2:
            parts.append(f"source {lines[-2]} :: {lines[-1]}")
    return ", ".join(parts)


def unsupported(fx: torch.fx.Node, why: str) -> UnsupportedOperationError:
    """The error for a call whose arguments a converter cannot convert (``why``)."""
    return UnsupportedOperationError(str(fx.target), where_of(fx), aten_names(), hint=why)


def per_sample_shape(fx: torch.fx.Node) -> tuple[int, ...]:
    """The per-sample shape of ``fx``'s value (the exported batch is 2); refuses values that
    do not keep the batch dimension first."""
    val = fx.meta.get("val")
    if not isinstance(val, Tensor) or val.dim() == 0 or val.shape[0] != 2:
        shape = list(val.shape) if isinstance(val, Tensor) else type(val).__name__
        raise UnsupportedOperationError(
            str(fx.target), where_of(fx), aten_names(),
            hint=f"Its result {shape} does not keep the batch dimension first; lipbound needs "
                 "models that treat batch entries independently.",
        )
    return tuple(int(s) for s in val.shape[1:])


def as_per_sample(c: Any, fx: torch.fx.Node, ndim: int) -> Any:
    """A constant operand as a per-sample broadcastable tensor (drop a leading batch dim 1)."""
    if not isinstance(c, Tensor):
        return torch.tensor(float(c), dtype=torch.float64)
    if c.dim() > ndim:
        if c.dim() != ndim + 1 or c.shape[0] != 1:
            raise unsupported(fx, "a constant operand varies along the batch dimension")
        c = c[0]
    return c.detach()


def unit_slices(b: Any, fx: torch.fx.Node, x: Var, d: int, tag: str) -> list[Var]:
    """The slices of length one of ``x`` along per-sample dim ``d`` (the dim kept), as
    ``slice`` helper nodes tagged ``tag`` (sort networks, products, time steps)."""
    part = x.shape[:d] + (1,) + x.shape[d + 1:]
    return [b.aux(fx, f"{tag}{i}", "slice", [x], part,
                  {"dim": d, "start": i, "end": i + 1, "step": 1}) for i in range(x.shape[d])]


def time_steps(b: Any, fx: torch.fx.Node, x: Var, tag: str) -> tuple[Var, ...]:
    """The per-sample values x[t] of a batch-first x [T, ...] (helpers tagged ``tag``)."""
    part = x.shape[1:]
    return tuple(b.aux(fx, f"{tag}{t}", "reshape", [s], part, {"shape": part})
                 for t, s in enumerate(unit_slices(b, fx, x, 0, tag + "s")))


def time_major(b: Any, fx: torch.fx.Node, x: Var) -> None:
    """``x.transpose(0, 1)`` of a batch-first x [T, ...]: the Stacked sequence of its steps."""
    b.vars[fx.name] = Stacked(time_steps(b, fx, x, "t"))


def broadcast(b: Any, fx: torch.fx.Node, v: Var, shape: tuple[int, ...], tag: str) -> Var:
    """``v`` broadcast to the per-sample ``shape`` by explicit reshape/expand nodes."""
    if v.shape == shape:
        return v
    if len(v.shape) < len(shape):
        v = b.aux(fx, tag + "_r", "reshape", [v], (1,) * (len(shape) - len(v.shape)) + v.shape,
                  {"shape": (1,) * (len(shape) - len(v.shape)) + v.shape})
    if v.shape == shape:
        return v
    return b.aux(fx, tag + "_x", "expand", [v], shape, {"shape": shape})


def one(c: Tensor) -> Tensor:
    """A scalar 1 in ``c``'s dtype."""
    return torch.ones((), dtype=c.dtype)


def reduction_dims(fx: torch.fx.Node, x: Var, dims: Any) -> tuple[int, ...]:
    """Per-sample dims of a reduction (the batch dimension cannot be reduced)."""
    nd = len(x.shape) + 1
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return tuple(range(len(x.shape)))
    if isinstance(dims, int):
        dims = [dims]
    dims = sorted({d % nd for d in dims})
    if 0 in dims:
        raise unsupported(fx, "reductions over the batch dimension are not supported")
    return tuple(d - 1 for d in dims)


def unary(kind: str) -> Callable[..., Any]:
    """The converter of a call ``f(x)`` that is one node of op ``kind`` on ``x``."""

    def convert(b: Any, fx: torch.fx.Node, x: Var) -> None:
        b.add(fx, kind, [x])

    return convert


#: torch.nn module class -> a forward ``f(module, *args, **kwargs)`` computing the same function
#: from ops the table converts, used in place of the module's own forward while the model is
#: traced (filled by the op modules with :func:`replaces_forward`)
MODULE_FORWARDS: dict[type, Callable[..., Any]] = {}


def replaces_forward(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: trace modules of class ``cls`` through the decorated forward. For modules
    whose own forward takes a path the per-sample graph cannot hold (nn.MultiheadAttention
    moves the batch dimension to the middle); the recorder checks the recorded graph against
    the model's own forward on a second input (:mod:`lipbound.graph.record`)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if cls in MODULE_FORWARDS:
            raise ValueError(f"duplicate forward for {cls.__name__}")
        MODULE_FORWARDS[cls] = fn
        return fn

    return register


@contextmanager
def traced_forwards(model: torch.nn.Module) -> Iterator[list[torch.nn.Module]]:
    """Within: every submodule of ``model`` with a class in :data:`MODULE_FORWARDS` runs that
    forward, and torch's fused transformer fast paths are off (they would bypass it). Yields
    the modules it patched (callers check the traced graph against the model when any)."""
    from lipbound.ops import registry

    registry.load_all()
    patched = []
    for mod in model.modules():
        fn = MODULE_FORWARDS.get(type(mod))
        if fn is not None and "forward" not in mod.__dict__:
            mod.forward = functools.partial(fn, mod)
            patched.append(mod)
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield patched
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
        for mod in patched:
            del mod.__dict__["forward"]
