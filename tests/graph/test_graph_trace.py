"""The tracer (lipbound.graph.trace + the ATen table in lipbound.graph.aten) and the Graph IR.

A traced graph, evaluated node by node with the registered ops, must reproduce the model in
float64; its per-sample shapes, order and provenance must be right; it must be immutable; and
everything it cannot represent must be refused with the documented error types.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lipbound.errors import (
    ModelModeError,
    ShapeError,
    TracingError,
    UnsupportedOperationError,
)
from lipbound.graph.aten import HANDLERS, SUPPORTED
from lipbound.graph.ir import INPUT, Graph, Node, freeze, graph_to
from lipbound.graph.trace import check_eval_mode, trace
from lipbound.ops import registry
from tests.conftest import MODEL_NAMES, evaluate_graph

pytestmark = pytest.mark.usefixtures("one_thread")


def _model64(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double()


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_graph_reproduces_model_in_float64(name, normalize, model_zoo, traced, run_graph, gen):
    model, shape = model_zoo[name]
    graph = traced(name, normalize)
    x = torch.randn(7, *shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        want = _model64(model)(x)
    got = run_graph(graph, x)[graph.output]
    assert got.dtype == torch.float64
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_per_sample_shapes_match_values(name, model_zoo, traced, run_graph, gen):
    _, shape = model_zoo[name]
    for normalize in (False, True):
        graph = traced(name, normalize)
        vals = run_graph(graph, torch.randn(3, *shape, generator=gen, dtype=torch.float64))
        assert graph[graph.input].shape == shape
        for n in graph.nodes:
            assert vals[n.name].shape == (3, *n.shape), n.name
            # each registered op's own shape rule agrees (except the input node)
            if n.op != INPUT:
                ins = [graph[s].shape for s in n.inputs]
                assert registry.get(n.op).output_shape(n.params, ins) == n.shape, n.name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_graph_is_topologically_ordered_with_one_input(name, traced):
    for normalize in (False, True):
        graph = traced(name, normalize)
        seen: set[str] = set()
        inputs = [n for n in graph.nodes if n.op == INPUT]
        assert [n.name for n in inputs] == [graph.input]
        for n in graph.nodes:
            assert set(n.inputs) <= seen, f"{n.name} reads a later node"
            assert n.name not in seen
            seen.add(n.name)
        assert graph.output in seen
        # every node feeds the output (nothing dead left over by the tracer)
        assert graph.ancestors(graph.output) | {graph.output} == seen


@pytest.mark.parametrize("normalize", [False, True])
def test_graph_and_nodes_are_immutable(normalize, model_zoo):
    model, shape = model_zoo["cnn"]  # a fresh trace: the test tries to mutate it
    graph = trace(model, torch.zeros(1, *shape), normalize_graph=normalize)
    node = next(n for n in graph.nodes if n.op == "conv")
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.op = "linear"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.output = graph.input  # type: ignore[misc]
    for n in graph.nodes:  # normalised (folded) nodes included
        with pytest.raises(TypeError):
            n.params["weight"] = None  # type: ignore[index]
    assert isinstance(graph.nodes, tuple)
    assert isinstance(node.inputs, tuple) and isinstance(node.shape, tuple)


def test_graph_rejects_bad_order_and_duplicates():
    a = Node("x", INPUT, (), (2,))
    b = Node("r", "relu", ("x",), (2,))
    assert Graph((a, b), "x", "r").position("r") == 1
    with pytest.raises(ValueError, match="topological"):
        Graph((b, a), "x", "r")
    with pytest.raises(ValueError, match="topological"):
        Graph((a, Node("r", "relu", ("missing",), (2,))), "x", "r")
    with pytest.raises(ValueError, match="duplicate"):
        Graph((a, b, Node("r", "relu", ("x",), (2,))), "x", "r")


def test_freeze_copies_the_mapping():
    src = {"a": 1}
    frozen = freeze(src)
    src["a"] = 2
    assert frozen["a"] == 1
    with pytest.raises(TypeError):
        frozen["a"] = 3  # type: ignore[index]


def test_params_are_float64_copies_not_the_model_tensors(model_zoo, traced):
    model, _ = model_zoo["mlp"]
    graph = traced("mlp", normalize=False)
    linears = [n for n in graph.nodes if n.op == "linear"]
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == len(layers)
    for n, layer in zip(linears, layers):
        w = n.params["weight"]
        assert w.dtype == torch.float64
        assert torch.equal(w, layer.weight.detach().double())  # exact widening
        assert w.data_ptr() != layer.weight.data_ptr()


def test_graph_to_casts_floating_params_only(traced):
    graph = traced("cnn", normalize=False)
    g32 = graph_to(graph, torch.float32)
    for a, b in zip(graph.nodes, g32.nodes):
        assert (a.name, a.op, a.inputs, a.shape, a.where) == (b.name, b.op, b.inputs, b.shape,
                                                             b.where)
        for k, v in a.params.items():
            if isinstance(v, torch.Tensor):
                assert b.params[k].dtype == (torch.float32 if v.is_floating_point() else v.dtype)
            else:
                assert b.params[k] == v


def test_where_names_the_module_of_each_node(traced):
    graph = traced("cnn", normalize=False)
    by_op = {}
    for n in graph.nodes:
        by_op.setdefault(n.op, []).append(n)
    assert "module 'c1' (Conv2d)" in by_op["conv"][0].where
    assert "module 'c3' (Conv2d)" in by_op["conv"][2].where
    assert any("module 'bn2' (BatchNorm1d)" in n.where for n in by_op["scale_shift"])
    assert "module 'head' (Linear)" in by_op["linear"][-1].where
    # functional calls point at the source line of the model's forward
    assert "F.max_pool2d(h, 3, stride=2, padding=1)" in by_op["max_pool"][0].where


def test_unsupported_op_names_op_and_location():
    class Sinh(nn.Module):
        def forward(self, x):
            return torch.sinh(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Linear(3, 4), Sinh())
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.block(x))

    with pytest.raises(UnsupportedOperationError) as info:
        trace(Net().eval(), torch.zeros(1, 3))
    err = info.value
    assert err.op == "aten.sinh.default"
    assert "module 'block.1' (Sinh)" in err.where
    assert "torch.sinh(x)" in err.where
    assert "aten.sinh.default" in str(err) and err.where in str(err)
    assert "aten.linear.default" in err.supported


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.lin(x))


@pytest.mark.parametrize("fn, op, why", [
    (lambda h: torch.cdist(h[:, None], h[:, None])[:, 0], "aten.cdist.default",
     "Supported operators"),
    (lambda h: h * torch.sort(h, 1).indices, "aten.mul.Tensor", "indices of sort"),
    (lambda h: h * ((h > 0) & (h < 1)), "aten.__and__.Tensor", "condition of torch.where"),
    (lambda h: torch.logcumsumexp(h, 1), "aten.logcumsumexp.default", "Supported operators"),
    (lambda h: h * torch.cummax(h, 1).indices, "aten.mul.Tensor", "indices of cummax"),
    (lambda h: F.elu(h, alpha=-0.5), "aten.elu.default", "alpha > 0"),
    (lambda h: F.leaky_relu(h, 2.0), "aten.leaky_relu.default", "negative slope"),
    (lambda h: F.softplus(h, beta=-2.0), "aten.softplus.default", "beta > 0"),
    (lambda h: h.roll(1, 0), "aten.roll.default", "mixes batch entries"),
    (lambda h: h[torch.zeros(2, dtype=torch.long)], "aten.index.Tensor", "mixes batch entries"),
    (lambda h: torch.stack([h, h]).sum(0), "aten.stack.default", "decomposition needs"),
    (lambda h: h.sum(0, keepdim=True).expand(2, 3), "aten.sum.dim_IntList", "Supported operators"),
])
def test_unsupported_variants_are_refused(fn, op, why):
    with pytest.raises(UnsupportedOperationError, match=why) as info:
        trace(_Fn(fn).eval(), torch.zeros(1, 3))
    assert info.value.op == op
    assert info.value.where.startswith("node ")


@pytest.mark.parametrize("fn", [
    F.relu, lambda h: h.clamp(min=0), lambda h: torch.clamp_min(h, 0.0),
    lambda h: F.leaky_relu(h, 0.0), nn.ReLU(inplace=True),
])
def test_relu_spellings_become_relu(fn):
    graph = trace(_Fn(fn).eval(), torch.zeros(1, 3), normalize_graph=False)
    assert [n.op for n in graph.nodes] == [INPUT, "linear", "relu"]


@pytest.mark.parametrize("module, op, params", [
    (nn.LeakyReLU(0.2), "leaky_relu", {"negative_slope": 0.2}),
    (nn.Tanh(), "tanh", {}), (nn.GELU(), "gelu", {}), (nn.Sigmoid(), "sigmoid", {}),
    (nn.SiLU(), "silu", {}), (nn.Softplus(), "softplus", {"threshold": 20.0}),
    (nn.ELU(), "elu", {"alpha": 1.0}), (nn.GELU(approximate="tanh"), "gelu_tanh", {}),
    (nn.Mish(), "mish", {}), (nn.Softshrink(0.3), "pwl", {
        "breakpoints": (-0.3, 0.3), "slopes": (1.0, 0.0, 1.0), "intercepts": (0.3, 0.0, -0.3),
        "name": "softshrink"}),
])
def test_activation_kinds(module, op, params):
    graph = trace(_Fn(module).eval(), torch.zeros(1, 3), normalize_graph=False)
    node = graph[graph.output]
    assert node.op == op and dict(node.params) == params


def test_dropout_in_eval_is_identity():
    def net(p):
        layers = [nn.Linear(4, 5), nn.Dropout(p), nn.ReLU(), nn.Dropout(p), nn.Linear(5, 2)]
        return nn.Sequential(*layers)

    with_dropout = net(0.5).eval()
    without = net(0.0).eval()
    without.load_state_dict(with_dropout.state_dict())
    g1 = trace(with_dropout, torch.zeros(1, 4), normalize_graph=False)
    g2 = trace(without, torch.zeros(1, 4), normalize_graph=False)
    assert [n.op for n in g1.nodes] == [INPUT, "linear", "relu", "linear"]
    assert [(n.op, n.inputs) for n in g1.nodes] == [(n.op, n.inputs) for n in g2.nodes]


def test_training_mode_is_refused():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    with pytest.raises(ModelModeError, match="training mode"):
        trace(model, torch.zeros(1, 3))
    model.eval()
    model[1].train()  # one submodule left in training mode is enough
    with pytest.raises(ModelModeError, match="'1'"):
        check_eval_mode(model)
    model.eval()
    check_eval_mode(model)
    trace(model, torch.zeros(1, 3))


def test_shape_and_tracing_errors():
    with pytest.raises(ShapeError, match="cannot run"):
        trace(nn.Linear(3, 2).eval(), torch.zeros(1, 4))
    with pytest.raises(ShapeError, match=r"\[B, K\]"):
        trace(nn.Conv1d(1, 1, 2).eval(), torch.zeros(1, 1, 4))
    with pytest.raises(TracingError, match="nn.Module"):
        trace(lambda x: x, torch.zeros(1, 3))  # type: ignore[arg-type]

    class Constant(nn.Module):
        def forward(self, x):
            return torch.ones(2, 3)

    with pytest.raises(TracingError, match="does not depend"):
        trace(Constant().eval(), torch.zeros(1, 3))


def test_constant_subexpressions_are_folded():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3))
            self.c = nn.Parameter(torch.randn(4))

        def forward(self, x):
            return x @ (2 * self.w).t() + self.c * 3

    model = Net().eval()
    graph = trace(model, torch.zeros(1, 3), normalize_graph=False)
    assert [n.op for n in graph.nodes if n.op != INPUT][0] == "linear"
    assert all(n.op in (INPUT, "linear", "scale_shift") for n in graph.nodes)
    x = torch.randn(5, 3, dtype=torch.float64)
    with torch.no_grad():
        want = _model64(model)(x)
    torch.testing.assert_close(evaluate_graph(graph, x)[graph.output], want, rtol=1e-12,
                               atol=1e-12)


def test_supported_list_matches_handlers_and_kinds_are_registered():
    assert SUPPORTED == sorted(HANDLERS)
    kinds = set(registry.kinds())
    for kind in ("linear", "conv", "scale_shift", "add", "relu", "leaky_relu", "tanh", "gelu",
                 "max_pool", "avg_pool", "pad", "reshape", "concat", "slice", "permute"):
        assert kind in kinds
    with pytest.raises(UnsupportedOperationError) as info:
        registry.get("no_such_op", "somewhere")
    assert info.value.op == "no_such_op" and info.value.where == "somewhere"


def test_constant_that_broadcasts_the_input_is_expanded_first():
    """x [B, 1, 4] * c [2, 4] -> [B, 2, 4]: a scale_shift whose output were larger than its
    input would break normalisation (the fold into the next Linear drops the broadcast) and
    the Jacobian (the transpose must sum over the broadcast axis), so the tracer broadcasts
    the input by an explicit expand first and the scale_shift keeps its shape."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("c", torch.randn(2, 4))
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc((x * self.c).flatten(1))

    net = Net().eval().double()
    graph = trace(net, torch.zeros(1, 1, 4, dtype=torch.float64), normalize_graph=False)
    ops = [n.op for n in graph.nodes]
    assert "expand" in ops and ops.index("expand") < ops.index("scale_shift")
    x = torch.randn(5, 1, 4, dtype=torch.float64)
    for g in (graph, trace(net, torch.zeros(1, 1, 4, dtype=torch.float64))):
        with torch.no_grad():
            assert torch.allclose(evaluate_graph(g, x)[g.output], net(x))
    # broadcasting the constant (not the input) stays one scale_shift
    graph = trace(_Fn(lambda h: h * torch.tensor([[1.0, 2.0, 3.0]])).eval(), torch.zeros(1, 3),
                  normalize_graph=False)
    assert graph[graph.output].op == "scale_shift"


def test_constants_made_in_forward_become_float64_params(gen):
    """torch.ones(...) in forward is float32; the graph holds it as float64 like every other
    parameter, so normalisation can merge it with the float64 Linear after it."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x @ torch.full((4, 3), 0.1) + torch.ones(3))

    model = Net().eval()
    raw = trace(model, torch.zeros(1, 4), normalize_graph=False)
    for n in raw.nodes:
        for v in n.params.values():
            if isinstance(v, torch.Tensor):
                assert v.dtype == torch.float64, n.name
    first = raw.nodes[1]
    assert first.op == "linear"
    assert torch.equal(first.params["weight"], torch.full((3, 4), 0.1).double())  # exact f32
    graph = trace(model, torch.zeros(1, 4))
    assert [n.op for n in graph.nodes] == [INPUT, "linear"]
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    fc64 = copy.deepcopy(model.fc).double()
    with torch.no_grad():
        want = fc64(x @ torch.full((4, 3), 0.1).double() + 1.0)
    torch.testing.assert_close(evaluate_graph(graph, x)[graph.output], want, rtol=1e-12,
                               atol=1e-12)


class _Casts(nn.Module):
    def __init__(self, narrow: bool = False):
        super().__init__()
        self.lin, self.narrow = nn.Linear(3, 3), narrow

    def forward(self, x):
        h = self.lin(x)
        if self.narrow:
            return h.half().float()
        return h.float() * (h > 0.1).float() + h.to(torch.float32)


def test_casts_through_torch_export():
    """torch.export writes dtype checks and conversions the recorder never sees: a cast to
    the same or a wider floating dtype is the identity, a comparison's cast is its step, and a
    narrowing cast (a rounding the graph would not model) is refused."""
    from lipbound.graph import trace as trace_mod

    model = _Casts().eval()
    x2 = torch.rand(2, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    graph = trace_mod._exported(model, x2)
    pts = torch.rand(30, 3, generator=torch.Generator().manual_seed(1)) - 0.5
    with torch.no_grad():
        want = model(pts).double()
    assert torch.allclose(evaluate_graph(graph, pts.double())[graph.output], want, atol=1e-6)
    with pytest.raises(UnsupportedOperationError, match="conversion from torch.float32"):
        trace_mod._exported(_Casts(narrow=True).eval(), x2)
