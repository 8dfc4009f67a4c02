"""The normaliser (lipbound.graph.normalize): each rewrite fires where it should, nowhere
else, keeps the function, and folds in float64 on the exact parameter values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lipbound.graph.ir import INPUT, Graph, Node, freeze
from lipbound.graph.normalize import _cheaper, normalize
from lipbound.graph.trace import trace
from tests.conftest import MODEL_NAMES, evaluate_graph, seeded_init

pytestmark = pytest.mark.usefixtures("one_thread")


def _raw(model: nn.Module, *shape: int) -> Graph:
    return trace(model.eval(), torch.zeros(1, *shape), normalize_graph=False)


def _ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


def _assert_same_function(g1: Graph, g2: Graph, shape, gen, n: int = 6) -> None:
    x = torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    y1 = evaluate_graph(g1, x)[g1.output]
    y2 = evaluate_graph(g2, x)[g2.output]
    torch.testing.assert_close(y2, y1, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_normalize_preserves_the_function(name, model_zoo, traced, gen):
    _, shape = model_zoo[name]
    _assert_same_function(traced(name, False), traced(name, True), shape, gen)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_normalized_params_are_float64_and_normalize_is_idempotent(name, traced):
    graph = traced(name, True)
    for n in graph.nodes:
        for v in n.params.values():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                assert v.dtype == torch.float64, n.name
    again = normalize(graph)
    assert [(n.name, n.op, n.inputs) for n in again.nodes] == \
        [(n.name, n.op, n.inputs) for n in graph.nodes]


def test_zoo_rewrites_fire(traced):
    # cnn: both BatchNorms fold into the Conv / Linear before them; the input normalisation
    # (x - 0.4) / 0.3 (two scale-shifts) becomes one, kept because a Conv follows
    raw, norm = traced("cnn", False), traced("cnn", True)
    assert _ops(raw).count("scale_shift") == 4
    assert _ops(norm).count("scale_shift") == 1
    assert norm.nodes[1].op == "scale_shift" and norm.nodes[1].inputs == (norm.input,)
    # normalized_mlp: (x - mean) / std across a Flatten folds into the first Linear
    assert _ops(traced("normalized_mlp", True)) == [INPUT, "reshape", "linear", "relu",
                                                     "linear"]


def test_normalize_leaves_its_argument_unchanged(traced):
    raw = traced("cnn", False)
    nodes = raw.nodes
    snapshot = {(n.name, k): v.clone() for n in raw.nodes for k, v in n.params.items()
                if isinstance(v, torch.Tensor)}
    normalize(raw)
    assert raw.nodes is nodes
    for (name, k), v in snapshot.items():
        assert torch.equal(raw[name].params[k], v), (name, k)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_batchnorm_fold_is_exact_float64(kind, gen):
    if kind == "linear":
        lin, bn, shape = nn.Linear(5, 4), nn.BatchNorm1d(4), (5,)
        model = seeded_init(nn.Sequential(lin, bn, nn.ReLU(), nn.Linear(4, 2)), 11)
    else:
        lin, bn, shape = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), (2, 4, 4)
        model = seeded_init(nn.Sequential(lin, bn, nn.ReLU(), nn.Flatten(),
                                          nn.Linear(48, 2)), 12)
    raw = _raw(model, *shape)
    norm = normalize(raw)
    assert _ops(raw).count("scale_shift") == 1
    assert "scale_shift" not in _ops(norm)
    folded = norm.nodes[1]
    assert folded.op == kind and folded.inputs == (norm.input,)
    assert "BatchNorm" not in folded.where and type(lin).__name__ in folded.where

    # the float64 products of the float32 parameters, in the tracer's order of operations
    d = lambda t: t.detach().double()  # noqa: E731
    scale = 1.0 / torch.sqrt(d(bn.running_var) + bn.eps) * d(bn.weight)
    shift = -d(bn.running_mean) * scale + d(bn.bias)
    view = (-1,) + (1,) * (lin.weight.dim() - 1)
    want_w = d(lin.weight) * scale.reshape(view)
    want_b = d(lin.bias) * scale + shift
    w, b = folded.params["weight"], folded.params["bias"]
    assert w.dtype == b.dtype == torch.float64
    assert torch.equal(w, want_w)
    assert torch.equal(b, want_b)
    # ... which float32 cannot hold: the fold did not round to the model's dtype
    assert not torch.equal(w.float().double(), w)
    _assert_same_function(raw, norm, shape, gen)


def test_input_normalisation_folds_into_the_linear_across_flatten(model_zoo, traced):
    model, shape = model_zoo["normalized_mlp"]
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    lin = traced("normalized_mlp", True).nodes[2]
    assert lin.op == "linear"
    inv = (1.0 / model.std.double()).expand(shape).reshape(-1)
    shift = (-model.mean.double() * (1.0 / model.std.double())).expand(shape).reshape(-1)
    w64, b64 = first.weight.detach().double(), first.bias.detach().double()
    assert torch.equal(lin.params["weight"], w64 * inv)
    torch.testing.assert_close(lin.params["bias"], b64 + w64 @ shift, rtol=1e-15, atol=1e-15)


def test_scale_shift_chains_compose_and_fold(gen):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 2)
            self.fc = nn.Linear(2 * 2 * 2, 2)

        def forward(self, x):
            h = (self.conv(x) * 2.0 + 1.0) / 4.0 - 0.5   # four constant ops, per-tensor
            return self.fc(torch.relu(h).flatten(1))

    raw = _raw(seeded_init(Net(), 13), 1, 3, 3)
    norm = normalize(raw)
    assert _ops(raw).count("scale_shift") == 4
    assert _ops(norm) == [INPUT, "conv", "relu", "reshape", "linear"]
    _assert_same_function(raw, norm, (1, 3, 3), gen)


def test_non_per_channel_scale_after_conv_is_kept(gen):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 2)
            self.register_buffer("s", torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # per pixel
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(torch.tanh(self.conv(x) * self.s).flatten(1))

    raw = _raw(seeded_init(Net(), 14), 1, 3, 3)
    norm = normalize(raw)
    assert _ops(norm) == [INPUT, "conv", "scale_shift", "tanh", "reshape", "linear"]
    _assert_same_function(raw, norm, (1, 3, 3), gen)


def test_linear_chains_merge_only_when_cheaper(gen):
    def chain(*sizes):
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.Dropout(0.5)]  # dropout: identity in eval
        return seeded_init(nn.Sequential(*layers[:-1]), 15)

    # 6 -> 8 -> 3: the product (3 x 6) is smaller than the factors: one Linear
    model = chain(6, 8, 3)
    raw = _raw(model, 6)
    norm = normalize(raw)
    assert _ops(raw) == [INPUT, "linear", "linear"]
    assert _ops(norm) == [INPUT, "linear"]
    w1, w2 = model[0].weight.detach().double(), model[2].weight.detach().double()
    b1, b2 = model[0].bias.detach().double(), model[2].bias.detach().double()
    merged = norm.nodes[1].params
    assert torch.equal(merged["weight"], w2 @ w1)
    assert torch.equal(merged["bias"], b2 + w2 @ b1)
    _assert_same_function(raw, norm, (6,), gen)

    # 6 -> 2 -> 6: a bottleneck; the 6 x 6 product has more entries than 12 + 12: kept
    raw = _raw(chain(6, 2, 6), 6)
    assert _ops(normalize(raw)) == [INPUT, "linear", "linear"]
    # 4 -> 2 -> 4: 16 <= 8 + 8: merged (the boundary counts as cheaper)
    assert _ops(normalize(_raw(chain(4, 2, 4), 4))) == [INPUT, "linear"]
    # a chain of three collapses into one
    raw = _raw(chain(5, 7, 6, 3), 5)
    norm = normalize(raw)
    assert _ops(norm) == [INPUT, "linear"]
    _assert_same_function(raw, norm, (5,), gen)


def test_cheaper_counts_entries():
    def lin(out, inp):
        return Node(f"l{out}x{inp}", "linear", (), (out,), freeze({"weight": torch.zeros(out,
                                                                                        inp)}))

    assert _cheaper(lin(8, 6), lin(3, 8))       # 18 <= 48 + 24
    assert not _cheaper(lin(2, 6), lin(6, 2))   # 36 > 12 + 12
    assert _cheaper(lin(2, 4), lin(4, 2))       # 16 <= 8 + 8
    assert not _cheaper(lin(3, 10), lin(10, 3))  # 100 > 30 + 30


class _TwoUsers(nn.Module):
    """A node with two users: no rewrite may absorb it."""

    def __init__(self, case: str):
        super().__init__()
        self.case = case
        self.l1 = nn.Linear(4, 4)
        self.l2 = nn.Linear(4, 4)
        self.l3 = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(4)
        self.register_buffer("mu", torch.tensor([0.1, 0.2, 0.3, 0.4]))

    def forward(self, x):
        if self.case == "bn":          # Linear read by BatchNorm and by the add
            h = self.l1(x)
            return self.l3(torch.relu(self.bn(h) + h))
        if self.case == "linear":      # Linear read by two Linears
            h = self.l1(x)
            return self.l3(self.l2(h) - h @ torch.eye(4))
        z = (x - self.mu) / 2.0        # input normalisation read by two Linears
        return self.l3(torch.relu(self.l1(z)) + self.l2(z))


@pytest.mark.parametrize("case, kept", [("bn", ["linear", "scale_shift"]),
                                        ("linear", ["linear", "linear", "linear", "linear"]),
                                        ("norm", ["scale_shift", "linear", "linear"])])
def test_no_rewrite_through_a_node_with_two_users(case, kept, gen):
    raw = _raw(seeded_init(_TwoUsers(case), 16), 4)
    norm = normalize(raw)
    users = norm.consumers()
    shared = [n for n in norm.nodes if len(users[n.name]) == 2]
    assert len(shared) == 1 and shared[0].op == kept[0]
    got = [n.op for n in norm.nodes if n.op in ("linear", "scale_shift")]
    # the last Linear (l3) and any single-user fold happen as usual; the shared node stays
    assert got[:len(kept)] == kept
    if case == "bn":
        bn = next(n for n in norm.nodes if n.op == "scale_shift")
        assert bn.inputs == (shared[0].name,)
    _assert_same_function(raw, norm, (4,), gen)


def test_unused_nodes_are_pruned(gen):
    w = torch.randn(3, 2, dtype=torch.float64, generator=gen)
    nodes = (
        Node("x", INPUT, (), (2,)),
        Node("dead", "linear", ("x",), (3,), freeze({"weight": w, "bias": None})),
        Node("dead2", "relu", ("dead",), (3,)),
        Node("y", "tanh", ("x",), (2,)),
    )
    norm = normalize(Graph(nodes, "x", "y"))
    assert [n.name for n in norm.nodes] == ["x", "y"]
