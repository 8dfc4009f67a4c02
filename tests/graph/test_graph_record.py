"""The fast tracer (lipbound.graph.record) and the model versions behind the trace caches.

A recorded graph must be the graph ``torch.export`` gives (same ops, inputs, shapes and
constants, so the same bounds); a forward pass whose values reach Python unseen or that
mutates tensors must not be recorded (the tracer then exports); and a cached trace must never
outlive a change of the model.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lipbound
from lipbound.graph import trace as trace_mod
from lipbound.graph.ir import Graph
from lipbound.graph.normalize import normalize
from lipbound.graph.record import NotRecordable, record
from lipbound.graph.versions import model_version
from lipbound.propagate.ibp import evaluate
from tests.conftest import MODEL_NAMES
from tests.models import mlp

pytestmark = pytest.mark.usefixtures("one_thread")


def _same_value(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, (list, tuple)) and not isinstance(b, (list, tuple)):
        return all(v == b for v in a)  # aten.convolution spells stride 1 as [1, 1]
    if isinstance(b, (list, tuple)) and not isinstance(a, (list, tuple)):
        return all(v == a for v in b)
    return a == b


def _assert_same_graph(a: Graph, b: Graph) -> None:
    """Equal up to node names: ops, wiring, shapes and parameter values."""
    assert [n.op for n in a.nodes] == [n.op for n in b.nodes]
    pos_a = {n.name: i for i, n in enumerate(a.nodes)}
    pos_b = {n.name: i for i, n in enumerate(b.nodes)}
    for na, nb in zip(a.nodes, b.nodes):
        assert na.shape == nb.shape
        assert [pos_a[i] for i in na.inputs] == [pos_b[i] for i in nb.inputs]
        assert set(na.params) == set(nb.params), na.op
        for key in na.params:
            assert _same_value(na.params[key], nb.params[key]), (na.op, key)


def _batch2(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(3))
    return torch.cat([x, x]).to(next(model.parameters()).dtype)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_recorded_graph_is_the_exported_graph(name, model_zoo):
    model, shape = model_zoo[name]
    x2 = _batch2(model, shape)
    recorded = trace_mod._recorded(model, x2)
    if recorded is None:  # refused: the tracer exports instead (nothing to compare)
        pytest.skip("not recordable; exported instead")
    exported = trace_mod._exported(model, x2)
    _assert_same_graph(recorded, exported)
    _assert_same_graph(normalize(recorded), normalize(exported))


def test_the_zoo_is_mostly_recorded(model_zoo):
    """The fast path must actually serve common models (else the first call stays slow)."""
    done = [n for n in MODEL_NAMES
            if trace_mod._recorded(model_zoo[n][0], _batch2(*model_zoo[n])) is not None]
    assert len(done) >= len(MODEL_NAMES) // 2, done


class _InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        h = self.fc(x)
        y = h * 1.0
        h.mul_(3.0)  # y must not see this; a graph without mutation would not know
        return y + h


class _Branch(nn.Module):
    def forward(self, x):
        return x[:, :2] if bool(x.sum() > 0) else -x[:, :2]


class _ToList(nn.Module):
    def forward(self, x):
        return x[:, :2] * torch.tensor(x.tolist(), dtype=x.dtype)[:, 2:]


class _Numpy(nn.Module):
    def forward(self, x):
        return x[:, :2] * torch.from_numpy(x.numpy())[:, 2:]


@pytest.mark.parametrize("model", [_Branch(), _ToList(), _Numpy()],
                         ids=["branch", "tolist", "numpy"])
def test_values_reaching_python_are_not_recorded(model):
    x2 = torch.rand(2, 3, generator=torch.Generator().manual_seed(0)) + 0.5
    with pytest.raises(NotRecordable):
        record(model.eval(), x2)


def test_in_place_mul_is_the_function_the_model_computes():
    """y = h * 1 is read before h.mul_(3): the model is 4 h, and so are both graphs."""
    model = _InPlace().eval()
    x2 = torch.rand(2, 3, generator=torch.Generator().manual_seed(1))
    for graph in (trace_mod._recorded(model, x2), trace_mod._exported(model, x2)):
        with torch.no_grad():
            assert torch.allclose(evaluate(graph, x2.double())[graph.output],
                                  model(x2).double(), rtol=1e-6, atol=1e-7)
    got = lipbound.local_lipschitz(model, x2[0], 0.1, method="crown").upper
    want = 4 * model.fc.weight.double().abs().sum(1)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_model_version_tracks_values_and_structure():
    model = mlp()
    v = model_version(model)
    assert model_version(model) == v
    model[1].weight.data.mul_(2.0)  # no version-counter bump on .data
    v2 = model_version(model)
    assert v2 != v
    model[2] = nn.Tanh().eval()
    assert model_version(model) != v2
    assert model_version(mlp()) != model_version(mlp())  # two modules, two versions


def test_cached_trace_follows_weight_changes():
    model = mlp()
    x = torch.rand(1, 4, generator=torch.Generator().manual_seed(2))
    lipbound.local_lipschitz(model, x, 0.05, method="crown")  # fills the caches
    model[1].weight.data.mul_(10.0)
    got = lipbound.local_lipschitz(model, x, 0.05, method="crown").upper
    fresh = mlp()
    fresh.load_state_dict(model.state_dict())
    want = lipbound.local_lipschitz(fresh, x, 0.05, method="crown").upper
    torch.testing.assert_close(got, want, rtol=0, atol=0)


class _InPlaceRelu(nn.Module):
    def __init__(self, view_first: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.view_first = view_first

    def forward(self, x):
        h = self.fc(x)
        y = h * 2.0
        v = h[:, :2] if self.view_first else y[:, :2]
        h.relu_()  # a view of h taken before would see the change
        return torch.cat([v, h[:, 2:] + y[:, 2:]], 1)


def test_in_place_relu_is_recorded_only_without_views():
    x2 = torch.rand(2, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    graph, _, _ = record(_InPlaceRelu(False).eval(), x2)
    assert any(str(n.target) == "aten.relu.default" for n in graph.nodes)  # its function
    assert not any(str(n.target).endswith("_.default") for n in graph.nodes)
    with pytest.raises(NotRecordable):
        record(_InPlaceRelu(True).eval(), x2)


@pytest.mark.parametrize("view_first", [False, True])
def test_in_place_relu_graph_is_the_exported_graph(view_first):
    model = _InPlaceRelu(view_first).eval()
    x2 = _batch2(model, (3,))
    exported = trace_mod._exported(model, x2)
    recorded = trace_mod._recorded(model, x2)
    assert (recorded is None) == view_first
    pts = x2[:1].double() + torch.randn(20, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = copy.deepcopy(model).double()(pts.clone())
    for graph in (exported, recorded):  # the view taken first sees the ReLU in both
        if graph is not None:
            assert torch.allclose(evaluate(graph, pts)[graph.output], want, atol=1e-12)
