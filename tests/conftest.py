"""Shared fixtures of the tests.

Nothing here is autouse: a test module opts in by naming a fixture (or with
``pytestmark = pytest.mark.usefixtures("one_thread")``), so modules that do not use these
fixtures run exactly as before.

- ``gen``: a torch.Generator seeded with 0 (fresh for every test);
- ``one_thread``: torch runs on one intra-op thread during the test (restored afterwards);
- ``run_graph``: evaluates a lipbound Graph node by node with each op's ``apply``;
- ``model_zoo``: small seeded models (name -> (model in eval mode, per-sample input shape));
- ``traced``: the zoo's models traced once per session, ``traced(name, normalize=True)``.

The zoo's models are built from their own seeded generator, so they do not depend on (or
change) torch's global random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lipbound.graph.ir import Graph
from lipbound.propagate.ibp import evaluate


def evaluate_graph(graph: Graph, x: Tensor) -> dict[str, Tensor]:
    """Value of every node of ``graph`` on the batched input ``x`` [N, *in]: each op's
    ``apply`` (:func:`lipbound.propagate.ibp.evaluate`; nodes that do not depend on the
    input keep batch 1)."""
    return evaluate(graph, x)


def seeded_init(model: nn.Module, seed: int) -> nn.Module:
    """Re-draw every parameter (uniform +- 1/sqrt(fan_in)) and BatchNorm statistics from a
    generator seeded with ``seed``; returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
                continue
            for p in m.parameters(recurse=False):
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                bound = 1.0 / math.sqrt(fan_in)
                p.uniform_(-bound, bound, generator=g)
    return model.eval()


class _Normalized(nn.Module):
    """(x - mean) / std with per-channel constants, then ``body``."""

    def __init__(self, body: nn.Module, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.body = body
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: Tensor) -> Tensor:
        return self.body((x - self.mean) / self.std)


class _ResidualMLP(nn.Module):
    """h = relu(W0 x); h = h + W2 relu(W1 h); out = W3 relu(h): fan-in at the add."""

    def __init__(self, n_in: int = 5, width: int = 7, n_out: int = 3) -> None:
        super().__init__()
        self.inp = nn.Linear(n_in, width)
        self.l1 = nn.Linear(width, width)
        self.l2 = nn.Linear(width, width)
        self.out = nn.Linear(width, n_out)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.inp(x))
        h = h + self.l2(torch.relu(self.l1(h)))
        return self.out(torch.relu(h))


class _ConvNet(nn.Module):
    """Input normalisation, Conv + BatchNorm + ReLU, a residual conv block, overlapping max
    pooling with padding, zero padding + average pooling, Flatten, Linear + BatchNorm1d."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.c2 = nn.Conv2d(3, 3, 3, padding=1)
        self.c3 = nn.Conv2d(3, 4, 2, stride=1)
        self.fc = nn.Linear(4 * 2 * 2, 6)
        self.bn2 = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = (x - 0.4) / 0.3
        h = F.relu(self.bn1(self.c1(x)))                      # [3, 6, 6]
        h = h + F.relu(self.c2(h))                            # residual
        h = F.max_pool2d(h, 3, stride=2, padding=1)           # [3, 3, 3], overlapping windows
        h = F.avg_pool2d(F.pad(self.c3(h), (1, 1, 1, 1)), 2)  # c3: [4, 2, 2] -> pad [4, 4, 4]
        h = torch.flatten(h, 1)
        return self.head(F.relu(self.bn2(self.fc(h))))


def _mlp(sizes: tuple[int, ...], acts: list[Callable[[], nn.Module]]) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(acts[i % len(acts)]())
    return nn.Sequential(*layers)


def _builders() -> dict[str, Callable[[], tuple[nn.Module, tuple[int, ...]]]]:
    return {
        # plain ReLU MLP
        "mlp": lambda: (seeded_init(_mlp((6, 10, 8, 3), [nn.ReLU]), 1), (6,)),
        # LeakyReLU / tanh / GELU / sigmoid layers
        "mlp_smooth": lambda: (seeded_init(_mlp(
            (5, 8, 8, 8, 8, 4),
            [lambda: nn.LeakyReLU(0.1), nn.Tanh, nn.GELU, nn.Sigmoid]), 2), (5,)),
        # residual (fan-in) MLP
        "resmlp": lambda: (seeded_init(_ResidualMLP(), 3), (5,)),
        # CNN with BN, pooling, padding, residual add, input normalisation
        "cnn": lambda: (seeded_init(_ConvNet(), 4), (2, 6, 6)),
        # per-channel input normalisation folded across a Flatten into the first Linear
        "normalized_mlp": lambda: (seeded_init(_Normalized(
            _mlp((2 * 3 * 3, 9, 3), [nn.ReLU]),
            torch.tensor([0.3, 0.6]).reshape(2, 1, 1),
            torch.tensor([0.25, 0.5]).reshape(2, 1, 1)), 5), (2, 3, 3)),
    }


MODEL_NAMES = tuple(_builders())


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator seeded with 0."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def one_thread():
    """Run the test with one torch intra-op thread (the machines are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run_graph() -> Callable[[Graph, Tensor], dict[str, Tensor]]:
    """``run_graph(graph, x)``: every node's value on x, see :func:`evaluate_graph`."""
    return evaluate_graph


@pytest.fixture(scope="session")
def model_zoo() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """name -> (float32 model in eval mode, per-sample input shape); see MODEL_NAMES."""
    return {name: build() for name, build in _builders().items()}


@pytest.fixture(scope="session")
def traced(model_zoo) -> Callable[..., Graph]:
    """``traced(name, normalize=True)``: the zoo model's graph, traced once per session."""
    from lipbound.graph.trace import trace

    cache: dict[tuple[str, bool], Graph] = {}

    def get(name: str, normalize: bool = True) -> Graph:
        key = (name, normalize)
        if key not in cache:
            model, shape = model_zoo[name]
            cache[key] = trace(model, torch.zeros(1, *shape), normalize_graph=normalize)
        return cache[key]

    return get
