"""ATen calls without a converter of their own, traced through torch's own decomposition.

A composite call (``torch.stack``, ``addcmul``, ``cosine_similarity``, ``outer``, ...) that no
op converts is replaced by the graph of its decomposition in torch (``torch._decomp``),
functionalised and traced on fake tensors of the call's shapes, and that graph's calls are
converted one by one (recursively). A decomposition computes the call's function exactly in
real arithmetic, so every relaxation, Jacobian rule and bound applies to it unchanged.

Only the calls in :data:`DECOMPOSED` are expanded: each decomposes into the same elementary
operations as torch's kernel (copies, products, sums, divisions, norms), so the rounding
allowance of the expanded nodes also covers the kernel's own rounding (sums in any order,
Higham Thm 3.5; a fused multiply-add rounds less). Calls that compare or branch on values
(``where`` on a comparison, ``sign``) stay refused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree as pytree

from lipbound.errors import UnsupportedOperationError
from lipbound.ops.tracing import Var, unsupported

#: the composite ATen overloads expanded through their decomposition
DECOMPOSED = frozenset({
    "aten.stack.default", "aten.hstack.default", "aten.vstack.default",
    "aten.column_stack.default", "aten.addcmul.default", "aten.addcdiv.default",
    "aten.outer.default", "aten.addr.default", "aten.mv.default", "aten.addmv.default",
    "aten.dot.default", "aten.baddbmm.default", "aten.cosine_similarity.default",
    "aten.squeeze.default",
})


@functools.cache
def _table() -> dict[Any, Callable[..., Any]]:
    from torch._decomp import core_aten_decompositions, decomposition_table

    return {**decomposition_table, **core_aten_decompositions()}


def decomposition(fx: torch.fx.Node) -> Callable[..., Any] | None:
    """torch's decomposition of the call ``fx``, if it is one lipbound expands."""
    if str(fx.target) not in DECOMPOSED:
        return None
    return _table().get(fx.target)


def expand(b: Any, fx: torch.fx.Node, args: tuple, kwargs: dict,
           convert: Callable[[Any, torch.fx.Node], None]) -> bool:
    """Convert ``fx`` through its decomposition with ``convert`` (the tracer's step); False
    when it has none that lipbound expands."""
    fn = decomposition(fx)
    if fn is None:
        return False
    leaves, spec = pytree.tree_flatten((args, kwargs))
    nodes, _ = pytree.tree_flatten((fx.args, fx.kwargs))
    slots = [i for i, v in enumerate(leaves) if isinstance(v, (Var, torch.Tensor))]
    examples = [_example(leaves[i], nodes[i]) for i in slots]

    def call(*tensors):
        filled = list(leaves)
        for i, t in zip(slots, tensors):
            filled[i] = t
        a, k = pytree.tree_unflatten(filled, spec)
        return fn(*a, **k)

    from torch.fx.experimental.proxy_tensor import make_fx

    try:
        gm = make_fx(torch.func.functionalize(call), tracing_mode="fake")(*examples)
    except Exception as exc:  # the decomposition does not trace on these arguments
        raise unsupported(fx, f"its decomposition could not be traced ({exc})") from exc
    _inline(b, fx, gm, [leaves[i] for i in slots], convert)
    return True


def _example(value: Any, node: Any) -> torch.Tensor:
    """A tensor standing for an argument while tracing: the exported value's shape and dtype
    for an input-dependent one (batch of 2), the constant itself otherwise."""
    if isinstance(value, Var):
        val = node.meta["val"]
        return torch.zeros(val.shape, dtype=val.dtype)
    return value


#: calls whose result may share memory with their first argument (an in-place call on it
#: would also change the tensor it views)
_VIEWS = frozenset({"view", "_unsafe_view", "reshape", "slice", "select", "as_strided", "expand",
                    "permute", "transpose", "t", "unsqueeze", "squeeze", "diagonal", "alias",
                    "detach", "unfold", "narrow", "split", "chunk", "unbind"})


def _functional_form(fx: torch.fx.Node, node: torch.fx.Node) -> str | None:
    """Turn an in-place call of a decomposition (``x.clamp_min_(eps)`` on a fresh tensor)
    into its out-of-place form; return the name of the tensor it mutates (None: not in
    place). Refuses mutations of views, placeholders and tensors read earlier, which the
    out-of-place form would not reproduce."""
    packet = node.target.__name__.split(".")[0] if hasattr(node.target, "__name__") else ""
    if not packet.endswith("_") or packet.startswith("_"):
        return None
    target = node.args[0]
    functional = getattr(getattr(torch.ops.aten, packet[:-1], None), node.target._overloadname,
                         None)
    src = target.target.__name__.split(".")[0] if target.op == "call_function" else ""
    earlier = [u for u in target.users if u is not node and _before(u, node)]
    if functional is None or not src or src in _VIEWS or earlier:
        raise unsupported(fx, f"its decomposition mutates a tensor in place ({node.target})")
    node.target = functional
    return target.name


def _before(a: torch.fx.Node, b: torch.fx.Node) -> bool:
    """Whether node ``a`` comes before node ``b`` in their graph."""
    n = a.next
    while n.op != "root":
        if n is b:
            return True
        n = n.next
    return False


def _inline(b: Any, fx: torch.fx.Node, gm: torch.fx.GraphModule, inputs: list[Any],
            convert: Callable[[Any, torch.fx.Node], None]) -> None:
    """Convert the calls of ``gm`` (placeholders = ``inputs``) in place of ``fx``."""
    placeholders = iter(inputs)
    for node in gm.graph.nodes:
        node.name = f"{fx.name}__{node.name}"
        for key in ("nn_module_stack", "stack_trace"):
            if key in fx.meta:
                node.meta[key] = fx.meta[key]
        if node.op == "placeholder":
            value = next(placeholders)
            (b.vars if isinstance(value, Var) else b.consts)[node.name] = value
        elif node.op == "get_attr":
            b.consts[node.name] = getattr(gm, str(node.target))
        elif node.op == "call_function":
            inplace = _functional_form(fx, node)
            try:
                convert(b, node)
            except UnsupportedOperationError as exc:
                raise unsupported(fx, f"its decomposition needs {exc.op!r} at {exc.where}") from exc
            if inplace is not None:  # later reads of the mutated tensor see the result
                (b.vars if node.name in b.vars else b.consts)[inplace] = b.resolve(node)
        elif node.op == "output":
            out = b.resolve(node.args[0])
            if isinstance(out, (Var, tuple, list)):
                b.vars[fx.name] = tuple(out) if isinstance(out, list) else out
            else:
                b.consts[fx.name] = out
