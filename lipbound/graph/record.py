"""A fast tracer: the ATen calls of one real forward pass, recorded under a dispatch mode.

``torch.export`` costs one to four seconds the first time a process uses it (it imports
``torch._dynamo`` and sympy). This module records the same kind of graph without that import:
it runs the model once on the example batch under a :class:`TorchDispatchMode`, and writes
every ATen call as a ``torch.fx`` node (parameters, buffers and tensors the forward pass
makes out of nothing become constants, as ``torch.export`` lifts them). The ATen table of
:mod:`lipbound.graph.aten` then converts it like an exported graph.

A recording can only describe the model if no value of the input reaches Python unseen, so
:func:`record` gives up (raises :class:`NotRecordable`, and the caller uses ``torch.export``)
when

- an ATen call mutates a tensor (in-place ops, ``out=``), since the graph would not see it;
- a call turns a tensor into a Python value (``bool(x > 0)``, ``x.item()``; the recorded
  control flow would hold for this input only);
- a tensor that the recording did not make shares memory with one it did (``x.numpy()``
  wrapped again, ``x.data``);
- any call returns something other than tensors;
- the recorded graph, evaluated on a second, perturbed input, does not reproduce the model's
  output there (this catches values read without any ATen call, such as ``x.tolist()``).

The graph is an aid to speed, not to soundness: the checks above make it describe the same
function as the model's forward pass, op for op, with the same constants.
"""

from __future__ import annotations

import linecache
import operator
import os
import sys
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from lipbound.ops.tracing import traced_forwards

#: calls that hand a tensor's value to Python
_SCALAR_OUT = {"aten._local_scalar_dense", "aten.item", "aten.is_nonzero", "aten.equal",
               "aten.allclose", "aten.is_same_size"}


class NotRecordable(Exception):
    """The model's forward pass cannot be recorded faithfully (see the module docstring)."""


class _Recorder(TorchDispatchMode):
    """Writes each ATen call of the forward pass into ``graph``."""

    def __init__(self, x: Tensor) -> None:
        super().__init__()
        self.graph = fx.Graph()
        self.consts: dict[str, Tensor] = {}
        self._node: dict[int, fx.Node] = {}  # id(tensor) -> node; tensors kept alive below
        self._alive: list[Tensor] = []
        self._storages: dict[int, int] = {}  # storage address -> tracked tensors on it
        self.input_name = self._track(x, self.graph.placeholder("x"))
        self.modules: list[tuple[str, type]] = []  # the calls under way, outermost first

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # the default wraps __torch_dispatch__ in torch._dynamo.disable, whose first use
        # imports torch._dynamo (seconds); nothing inside the recording is compiled
        return False

    def _track(self, t: Tensor, node: fx.Node) -> str:
        node.meta["val"] = t
        if id(t) not in self._node:  # a new tensor (an in-place op relabels an old one)
            ptr = t.untyped_storage().data_ptr()
            self._storages[ptr] = self._storages.get(ptr, 0) + 1
            self._alive.append(t)
        self._node[id(t)] = node
        return node.name

    def _arg(self, a: Any) -> Any:
        if not isinstance(a, Tensor):
            return a
        node = self._node.get(id(a))
        if node is not None:
            return node
        if a.untyped_storage().data_ptr() in self._storages and a.numel() > 0:
            raise NotRecordable("a tensor shares memory with a recorded value but was not "
                                "made by a recorded call")
        node = self.graph.placeholder(f"c{len(self.consts)}")
        self.consts[node.name] = a.detach()
        self._track(a, node)
        return node

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
        if name in _SCALAR_OUT or (func._schema.is_mutable and not self._sole_owner(func, args)):
            raise NotRecordable(f"{func} mutates a shared tensor or returns a Python value")
        target = func
        if func._schema.is_mutable:  # on a sole owner: the functional call stands for it
            target = _functional_overload(func)
            if target is None:
                raise NotRecordable(f"{func} has no functional form")
        out = func(*args, **kwargs)
        leaves, _ = tree_flatten(out)
        if not leaves or not all(isinstance(v, Tensor) for v in leaves):
            raise NotRecordable(f"{func} returned {type(out).__name__}")
        node = self.graph.create_node("call_function", target, tree_map(self._arg, args),
                                      tree_map(self._arg, kwargs), name=name.split(".")[-1])
        if self.modules:  # as torch.export records it, for error messages
            node.meta["nn_module_stack"] = {path: (path, cls) for path, cls in self.modules}
        node.meta["stack_trace"] = _user_line()
        if func._schema.is_mutable:  # from here on the mutated tensor is this node's value
            self._track(args[0], node)
        if isinstance(out, Tensor):
            self._track(out, node)
        elif isinstance(out, (tuple, list)) and all(isinstance(v, Tensor) for v in out):
            node.meta["val"] = tuple(out)
            for i, v in enumerate(out):
                self._track(v, self.graph.call_function(operator.getitem, (node, i)))
        else:
            raise NotRecordable(f"{func} returned a nested structure")
        return out

    def _sole_owner(self, func, args) -> bool:
        """Whether ``func`` is an in-place op (``relu_``) on a recorded tensor that no other
        recorded tensor views: then its node can stand for the tensor from here on."""
        target = args[0] if args else None
        mutated = [a for a in func._schema.arguments if a.alias_info and a.alias_info.is_write]
        return (isinstance(target, Tensor) and id(target) in self._node
                and [a.name for a in mutated] == [func._schema.arguments[0].name]
                and self._storages.get(target.untyped_storage().data_ptr()) == 1)

    def finish(self, out: Any) -> fx.Node:
        if not isinstance(out, Tensor) or id(out) not in self._node:
            raise NotRecordable("the model's output was not made by a recorded call")
        return self.graph.output((self._node[id(out)],))


def _functional_overload(func: Any) -> Any:
    """``aten.mul.Tensor`` for the in-place ``aten.mul_.Tensor`` (which writes to its first
    argument only, as :meth:`_Recorder._sole_owner` checked), or None."""
    base = func._schema.name.split("::")[-1]
    if not base.endswith("_") or base.startswith("_"):
        return None
    packet = getattr(torch.ops.aten, base[:-1], None)
    return None if packet is None else getattr(packet, func._overloadname, None)


_LIBS = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))


def _user_line() -> str | None:
    """The innermost calling line outside torch and lipbound, as torch.export writes it."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_LIBS):
        frame = frame.f_back
    if frame is None:
        return None
    code = frame.f_code
    line = linecache.getline(code.co_filename, frame.f_lineno).strip()
    return f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}\n    {line}\n'


def record(model: nn.Module, x2: Tensor) -> tuple[fx.Graph, dict[str, Tensor], str]:
    """(graph, constants by placeholder name, input placeholder name) of ``model`` on the
    batch ``x2``; raises :class:`NotRecordable` when the recording may not describe the model.
    """
    rec = _Recorder(x2)
    names = {id(m): name for name, m in model.named_modules()}

    def enter(mod: nn.Module, _args: Any) -> None:
        rec.modules.append((names.get(id(mod), type(mod).__name__), type(mod)))

    def leave(mod: nn.Module, _args: Any, _out: Any) -> None:
        rec.modules.pop()

    hooks = [register_module_forward_pre_hook(enter), register_module_forward_hook(leave)]
    try:
        with torch.no_grad(), traced_forwards(model), rec:
            out = model(x2)
    except NotRecordable:
        raise
    except Exception as exc:  # let torch.export report the model's own errors
        raise NotRecordable(str(exc)) from exc
    finally:
        for h in hooks:
            h.remove()
    rec.finish(out)
    _check_replay(model, rec, x2)
    return rec.graph, rec.consts, rec.input_name


def _check_replay(model: nn.Module, rec: _Recorder, x2: Tensor) -> None:
    """The recorded graph must reproduce the model on a perturbed input (same shape)."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    noise = torch.randn(x2.shape, generator=gen).to(device=x2.device, dtype=x2.dtype)
    x3 = x2 + noise * (1e-2 * (x2.abs().mean() + 1e-2))
    with torch.no_grad():
        want = model(x3.clone())  # a model may write to its input
        env: dict[str, Any] = {rec.input_name: x3, **rec.consts}
        got = None
        for node in rec.graph.nodes:
            if node.op == "call_function":
                args = tree_map(lambda a: env[a.name] if isinstance(a, fx.Node) else a,
                                (node.args, node.kwargs))
                env[node.name] = node.target(*args[0], **args[1])
            elif node.op == "output":
                got = env[node.args[0][0].name]
    ok = (isinstance(want, Tensor) and isinstance(got, Tensor) and want.shape == got.shape
          and bool(torch.isfinite(want).all()) and torch.allclose(got, want, rtol=1e-5,
                                                                   atol=1e-6))
    if not ok:
        raise NotRecordable("the recorded graph does not reproduce the model on a second input")
