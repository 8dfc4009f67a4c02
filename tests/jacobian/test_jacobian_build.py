"""The Clarke-Jacobian graph builder (lipbound.jacobian.build).

Evaluated at a point where every ReLU-like input is nonzero and no max-pool window has a tie,
the joint graph's gradient node must equal autograd's J_f(x)^T C_s for every spec row, and the
norm node must sum |g| (q = 1) or g^2 (q = 2).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lipbound.errors import UnsupportedOperationError
from lipbound.graph.ir import CONST, INPUT, Graph, Node, freeze
from lipbound.graph.trace import trace
from lipbound.jacobian.build import SPEC, JacobianGraph, jacobian_graph
from lipbound.ops import registry
from tests.conftest import MODEL_NAMES, evaluate_graph, seeded_init

pytestmark = pytest.mark.usefixtures("one_thread")


class _Mixed(nn.Module):
    """concat, slicing, a scaled copy, subtraction of two branches, SiLU / softplus / ELU,
    LeakyReLU and non-overlapping max pooling on a 1-channel image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc1 = nn.Linear(3 * 2 * 2, 6)
        self.fc2 = nn.Linear(6, 6)
        self.fc3 = nn.Linear(6, 3)

    def forward(self, x):
        h = F.leaky_relu(self.conv(x), 0.2)                  # [2, 4, 4]
        h = torch.cat([h, F.silu(h[:, :1])], 1)              # [3, 4, 4]
        h = F.max_pool2d(h, 2)                               # [3, 2, 2]
        h = F.softplus(self.fc1(h.flatten(1)))
        h = F.elu(self.fc2(h)) - 0.5 * h                     # add of two branches
        return self.fc3(h + h)                               # the same node read twice


def _cases(model_zoo):
    cases = {name: model_zoo[name] for name in MODEL_NAMES}
    cases["mixed"] = (seeded_init(_Mixed(), 21), (1, 4, 4))
    return cases


def _graph(name, model, shape, traced, normalize=True):
    if name in MODEL_NAMES:
        return traced(name, normalize)
    return trace(model, torch.zeros(1, *shape), normalize_graph=normalize)


def _autograd_rows(model, x, C):
    """C J_f(x) as [S, *in] by autograd in float64."""
    m64 = copy.deepcopy(model).double()
    J = torch.autograd.functional.jacobian(lambda z: m64(z)[0], x)  # [K, 1, *in]
    return (C @ J.reshape(J.shape[0], -1)).reshape(C.shape[0], *x.shape[1:])


def _assert_no_kinks(graph: Graph, vals) -> None:
    """No ReLU-like input exactly 0 and no tie for the max of a max-pool window (except
    windows of zeros: in the zoo's CNN those are sums of inactive ReLUs)."""
    for n in graph.nodes:
        if n.op in ("relu", "leaky_relu"):
            assert (vals[n.inputs[0]] != 0).all(), n.name
        if n.op == "max_pool":
            w = registry.get("max_pool").windows(n.params, vals[n.inputs[0]], float("-inf"))
            top2 = w.topk(2, dim=2).values
            # a tie is harmless only at 0 after ReLUs (every candidate has derivative 0)
            assert ((top2[:, :, 0] > top2[:, :, 1]) | (top2[:, :, 0] == 0)).all(), n.name


def _evaluate(jg: JacobianGraph, x, S):
    return evaluate_graph(jg.graph, x.expand(S, *x.shape[1:]))


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("name", [*MODEL_NAMES, "mixed"])
def test_gradient_node_equals_autograd(name, normalize, model_zoo, traced, gen):
    model, shape = _cases(model_zoo)[name]
    graph = _graph(name, model, shape, traced, normalize)
    K = graph[graph.output].shape[0]
    for trial in range(2):
        x = torch.randn(1, *shape, generator=gen, dtype=torch.float64)
        C = torch.randn(4, K, generator=gen, dtype=torch.float64)
        if trial:
            C = torch.eye(K, dtype=torch.float64)
        jg = jacobian_graph(graph, C)
        vals = _evaluate(jg, x, C.shape[0])
        _assert_no_kinks(graph, vals)
        g = vals[jg.gradient]
        assert g.shape == (C.shape[0], *shape)
        torch.testing.assert_close(g, _autograd_rows(model, x, C), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", [*MODEL_NAMES, "mixed"])
def test_joint_graph_structure(name, model_zoo, traced, gen):
    model, shape = _cases(model_zoo)[name]
    graph = _graph(name, model, shape, traced)
    K = graph[graph.output].shape[0]
    C = torch.randn(3, K, generator=gen, dtype=torch.float64)
    jg = jacobian_graph(graph, C)
    joint = jg.graph
    # the forward graph is an unchanged prefix; one input; the spec is a const of batch S
    assert joint.nodes[:len(graph.nodes)] == graph.nodes
    assert joint.input == graph.input
    assert joint[SPEC].op == CONST and joint[SPEC].params["value"] is C
    assert joint[SPEC].shape == (K,)
    assert jg.norm is None and joint.output == jg.gradient
    assert joint[jg.gradient].shape == shape
    # every declared shape is the value's per-sample shape
    vals = _evaluate(jg, torch.randn(1, *shape, generator=gen, dtype=torch.float64), 3)
    for n in joint.nodes:
        if n.op != CONST:
            assert vals[n.name].shape == (3, *n.shape), n.name
    # fan-in: a forward node read by r > 1 input-dependent nodes gets an add of r cotangents
    users = graph.consumers()
    for n in graph.nodes:
        if len(users[n.name]) > 1:
            cot = joint[f"cot_{n.name}"]
            assert cot.op == "add" and len(cot.inputs) == len(users[n.name])
    ops = {n.op for n in joint.nodes[len(graph.nodes):]}
    fwd = {n.op for n in graph.nodes}
    assert ("relu" in fwd) == ("relu_switch" in ops)
    assert ("leaky_relu" in fwd) == ("leaky_switch" in ops)
    assert ("max_pool" in fwd) == ("max_pool_grad" in ops)


@pytest.mark.parametrize("q", [1.0, 2.0])
@pytest.mark.parametrize("name", ["mlp_smooth", "cnn"])
def test_norm_node(name, q, model_zoo, traced, gen):
    model, shape = model_zoo[name]
    graph = traced(name)
    C = torch.randn(3, graph[graph.output].shape[0], generator=gen, dtype=torch.float64)
    jg = jacobian_graph(graph, C, q=q)
    assert jg.norm is not None and jg.graph.output == jg.norm
    assert jg.graph[jg.norm].shape == (1,)
    vals = _evaluate(jg, torch.randn(1, *shape, generator=gen, dtype=torch.float64), 3)
    g = vals[jg.gradient].flatten(1)
    want = g.abs().sum(1) if q == 1.0 else (g * g).sum(1)
    torch.testing.assert_close(vals[jg.norm][:, 0], want, rtol=1e-13, atol=0)


@pytest.mark.parametrize("q", [None, float("inf"), 3.0])
def test_no_norm_node_for_other_q(q, traced):
    graph = traced("mlp")
    jg = jacobian_graph(graph, torch.eye(3, dtype=torch.float64), q=q)
    assert jg.norm is None and jg.graph.output == jg.gradient


def _tiny(op: str, params=None) -> Graph:
    w = torch.ones(2, 3, dtype=torch.float64)
    return Graph((Node("x", INPUT, (), (3,)),
                  Node("h", op, ("x",), (3,), freeze(params), "module 'act' (Weird)"),
                  Node("y", "linear", ("h",), (2,), freeze({"weight": w, "bias": None}))),
                 "x", "y")


@pytest.mark.parametrize("op", ["d_tanh", "relu_switch", "no_such_op"])
def test_op_without_jacobian_rule_is_refused(op):
    with pytest.raises(UnsupportedOperationError) as info:
        jacobian_graph(_tiny(op), torch.eye(2, dtype=torch.float64))
    assert info.value.op == op
    assert info.value.where == "module 'act' (Weird)"


def test_output_independent_of_input_is_refused():
    c = torch.ones(1, 2, dtype=torch.float64)
    graph = Graph((Node("x", INPUT, (), (3,)), Node("c", CONST, (), (2,), freeze({"value": c})),
                   Node("y", "relu", ("c",), (2,))), "x", "y")
    with pytest.raises(UnsupportedOperationError, match="ignores the input"):
        jacobian_graph(graph, torch.eye(2, dtype=torch.float64))


def test_leaky_switch_keeps_the_slope(traced, model_zoo, gen):
    graph = traced("mlp_smooth")
    jg = jacobian_graph(graph, torch.eye(4, dtype=torch.float64))
    switches = [n for n in jg.graph.nodes if n.op == "leaky_switch"]
    assert len(switches) == 1 and switches[0].params["negative_slope"] == 0.1
    fwd = next(n for n in graph.nodes if n.op == "leaky_relu")
    assert switches[0].inputs[0] == fwd.inputs[0]  # reads the forward pre-activation z
