"""Trace a torch.nn.Module into lipbound's Graph with ``torch.export`` (a public API).

The model is exported on a batch of two copies of the input, so every tensor that depends on
the input must carry that batch dimension; per-sample shapes are stored without it. ATen ops
are mapped to lipbound op kinds by the converters the op modules register
(:mod:`lipbound.ops.tracing`, dispatched by :mod:`lipbound.graph.aten`); values that do not
depend on the input (weights, ``w.t()``, constants) are folded into parameters.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from lipbound.errors import LipboundError, ModelModeError, ShapeError, TracingError
from lipbound.gradmode import outside_inference_mode
from lipbound.graph.aten import Builder, convert_node
from lipbound.graph.ir import Graph
from lipbound.graph.normalize import normalize
from lipbound.ops.tracing import traced_forwards

#: modules that compute differently in training mode
_MODE_DEPENDENT = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
                   nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.Dropout,
                   nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                   nn.FeatureAlphaDropout)


def check_eval_mode(model: nn.Module) -> None:
    """Raise ModelModeError if any submodule is in training mode."""
    training = [(name, m) for name, m in model.named_modules() if m.training]
    if training:  # name a module whose mode matters, else a submodule, else the model
        moded = [(n, m) for n, m in training if isinstance(m, _MODE_DEPENDENT)]
        name, module = (moded or [(n, m) for n, m in training if n] or training)[0]
        where = f"{name!r} ({type(module).__name__})" if name else type(module).__name__
        raise ModelModeError(
            f"the model is in training mode (e.g. {where}); BatchNorm and Dropout "
            "behave differently there. Call model.eval() before computing bounds."
        )


@outside_inference_mode
def trace(model: nn.Module, example: Tensor, normalize_graph: bool = True) -> Graph:
    """Trace ``model`` on an example input [1, *in] (or [*in]) into a normalised Graph.

    Raises ModelModeError (training mode), ShapeError (the model cannot run on the input, or
    its output is not [B, K]) and UnsupportedOperationError (an op lipbound cannot bound).
    """
    if not isinstance(model, nn.Module):
        raise TracingError(f"expected a torch.nn.Module, got {type(model).__name__}")
    check_eval_mode(model)
    x2 = torch.cat([example, example], 0).detach()
    try:
        with torch.no_grad():
            out = model(x2)
    except Exception as exc:  # the user's model raised: report the shape problem clearly
        raise ShapeError(
            f"the model cannot run on an input of shape {list(example.shape)} "
            f"(batch of one sample of shape {list(example.shape[1:])}): {exc}"
        ) from exc
    if isinstance(out, Tensor) and out.dim() == 1 and out.shape[0] == 2:
        model = Column(model)  # one output per sample ([B]): traced as [B, 1]
    elif not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 2:
        shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ShapeError(
            f"the model must map [B, *in] to [B, K] or [B] (a batch of outputs); on a batch "
            f"of 2 it returned {shape}"
        )
    graph = _recorded(model, x2) if FAST_TRACE else None
    if graph is None:
        graph = _exported(model, x2)
    return normalize(graph) if normalize_graph else graph


class Column(nn.Module):
    """A model with one output per sample ([B], e.g. a binary classifier's ``squeeze(-1)``)
    as [B, 1]: bounds, constants and Jacobians have one row. Outputs [B, K] pass unchanged."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        y = self.model(x)
        return y.unsqueeze(-1) if isinstance(y, Tensor) and y.dim() == 1 else y


def as_matrix_output(model: nn.Module, probe: Tensor) -> nn.Module:
    """``model``, or :class:`Column` of it when its output on ``probe`` [1, *in] is [1]."""
    with torch.no_grad():
        out = model(probe)
    return Column(model) if isinstance(out, Tensor) and out.dim() == 1 else model


#: try :func:`lipbound.graph.record.record` before ``torch.export`` (set False to always export)
FAST_TRACE = True


def _recorded(model: nn.Module, x2: Tensor) -> Graph | None:
    """The graph of one recorded forward pass, or None when it cannot stand for the model or
    holds something the ATen table refuses (``torch.export`` then gives the error)."""
    from lipbound.graph.record import record

    try:
        fx_graph, consts, input_name = record(model, x2)
        return _convert(fx_graph, {k: _exact64(v) for k, v in consts.items()}, input_name)
    except Exception:  # NotRecordable, an op the table refuses, ...: torch.export decides
        return None


def _exported(model: nn.Module, x2: Tensor) -> Graph:
    try:
        with traced_forwards(model) as patched:
            ep = torch.export.export(model, (x2,))
    except LipboundError:
        raise
    except Exception as exc:
        raise TracingError(f"torch.export could not trace the model: {exc}") from exc
    if patched:
        _check_same_function(model, ep, x2)
    ep = _functional(ep)
    consts: dict[str, Tensor] = {}
    user_inputs = []
    for spec in ep.graph_signature.input_specs:
        name = spec.arg.name
        if spec.kind.name == "USER_INPUT":
            user_inputs.append(name)
        elif spec.target in ep.state_dict:
            consts[name] = _exact64(ep.state_dict[spec.target])
        elif spec.target in ep.constants:
            consts[name] = _exact64(ep.constants[spec.target])
    if len(user_inputs) != 1:
        raise TracingError(f"expected exactly one tensor input, found {len(user_inputs)}")
    return _convert(ep.graph, consts, user_inputs[0])


def _mutating(graph: torch.fx.Graph) -> list[torch.fx.Node]:
    """The calls of ``graph`` that write to one of their arguments (in-place ops, ``out=``)."""
    return [n for n in graph.nodes if n.op == "call_function"
            and isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable]


def _functional(ep: Any) -> Any:
    """The exported program without in-place calls.

    ``torch.export`` keeps in-place calls (``h.relu_()``) in its graph, and a view of ``h``
    taken before the call reads the *old* node there, while in the model it sees the new
    values. Read call by call as functions, such a graph is another function than the model
    (bounds on it need not contain the model's outputs), so a graph with a mutating call is
    functionalised (``run_decompositions`` with no decompositions: views of mutated tensors
    are replayed on the new values); one that still mutates is refused."""
    if not _mutating(ep.graph):
        return ep
    try:
        with warnings.catch_warnings():  # torch's own deprecation notice from its internals
            warnings.simplefilter("ignore", FutureWarning)
            ep = ep.run_decompositions({})
    except Exception as exc:
        raise TracingError(f"could not remove the model's in-place operations: {exc}") from exc
    left = _mutating(ep.graph)
    if left:
        raise TracingError(f"the model mutates a tensor in place ({left[0].target}) in a way "
                           "lipbound cannot turn into a function of its input")
    return ep


def _check_same_function(model: nn.Module, ep: Any, x2: Tensor) -> None:
    """The exported program, traced through the op modules' forwards for some submodules
    (:func:`lipbound.ops.tracing.traced_forwards`), must reproduce the model's own forward on
    a perturbed input (as the recorder checks its recordings)."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    noise = torch.randn(x2.shape, generator=gen).to(device=x2.device, dtype=x2.dtype)
    x3 = x2 + noise * (1e-2 * (x2.abs().mean() + 1e-2))
    with torch.no_grad():
        want = model(x3.clone())
        got = ep.module()(x3.clone())
    if not (isinstance(got, Tensor) and got.shape == want.shape
            and torch.allclose(got, want, rtol=1e-5, atol=1e-6)):
        raise TracingError("the traced forward of a module lipbound rewrites for tracing "
                           "(nn.MultiheadAttention) differs from the model's own forward")


def _convert(fx_graph: torch.fx.Graph, consts: dict[str, Tensor], input_name: str) -> Graph:
    """The lipbound graph of an ATen-level fx graph whose placeholders are ``input_name`` and
    the constants ``consts``."""
    b = Builder(consts)
    for node in fx_graph.nodes:
        if node.op == "placeholder":
            if node.name == input_name:
                b.add_input(node)
        elif node.op == "call_function":
            convert_node(b, node)
        elif node.op == "output":
            b.set_output(node.args[0][0] if isinstance(node.args[0], (tuple, list))
                         else node.args[0])
    return b.build()


def _exact64(t: Tensor) -> Tensor:
    """A parameter as float64 (exact for float32/float16 values), so that every rewrite of the
    graph (BatchNorm folding, merged Linear layers) rounds in float64, not in the model's
    dtype; non-floating tensors are kept."""
    t = t.detach()
    return t.double() if t.is_floating_point() else t
