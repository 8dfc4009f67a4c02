"""CROWN rows of spatial nodes run on windows (:mod:`lipbound.propagate.windows`): the bounds
must equal the dense rows' (up to the order of floating-point sums) on every geometry the
window rules handle (stride, padding, dilation, groups, max/avg pooling, residual sums,
per-channel scaling, flatten into dense layers) and contain sampled Clarke gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lipbound
from lipbound.bounds.domains import LpBall, make_domain
from lipbound.errors import ProblemTooLargeError
from lipbound.graph.trace import trace
from lipbound.jacobian import bound as jacobian_bound
from lipbound.jacobian.bound import jacobian_state
from lipbound.propagate import intermediate as crown
from lipbound.propagate.driver import prepare_state
from lipbound.propagate.intermediate import crown_node_bounds


class Res(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, 1, 1)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, 1, 2, dilation=2, groups=2)
        self.c3 = nn.Conv2d(4, 6, 1, 2, 0)
        self.c4 = nn.Conv2d(4, 6, 3, 2, 1)
        self.fc = nn.Linear(6 * 5 * 5, 3)

    def forward(self, x):
        a = torch.relu(self.bn(self.c1(x)))
        b = torch.relu(self.c2(a) + a)
        c = torch.relu(self.c3(b) - self.c4(b))
        return self.fc(c.flatten(1))


def _nets():
    torch.manual_seed(3)
    pool = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         nn.Conv2d(3, 4, 2, stride=1), nn.LeakyReLU(0.1),
                         nn.AvgPool2d(2, 1, padding=1), nn.Tanh(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5))
    pool2 = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2), nn.ReLU(),
                          nn.AvgPool2d(2, 2, padding=1, count_include_pad=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(3 * 3 * 3, 4))
    pool3 = nn.Sequential(nn.Conv2d(1, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 3),  # row 9 unread
                          nn.Flatten(), nn.Linear(3 * 3 * 3, 4))
    res = Res()
    res.bn.running_mean.uniform_(-0.2, 0.2)
    res.bn.running_var.uniform_(0.5, 2.0)
    return [("pool", pool.eval(), (1, 11, 11)), ("pool2", pool2.eval(), (1, 11, 11)),
            ("pool3", pool3.eval(), (1, 11, 11)), ("res", res.eval(), (2, 10, 10))]


NETS = _nets()


@pytest.fixture
def tile(request, monkeypatch):
    """Restores the tile; alpha iterates in float64, so that optimised bounds too compare to
    float64 summation order (float32 iterates pick parameters at float32 rounding)."""
    monkeypatch.setattr(jacobian_bound, "FORWARD_ITERATE_DTYPE", None)
    old = crown.WINDOW_TILE
    yield
    crown.WINDOW_TILE = old


def _bounds(net, x, eps, tile_size, iterations=0):
    crown.WINDOW_TILE = tile_size
    graph = trace(net.double(), x)
    dom = make_domain(x, eps, "inf", (0.0, 1.0))
    C = torch.eye(graph[graph.output].shape[0], dtype=torch.float64)
    state, jg = jacobian_state(graph, C, dom, "crown", forward_iterations=iterations)
    fwd = prepare_state(graph, dom, "crown", iterations=iterations)
    return ({k: (v.lower, v.upper) for k, v in state.bounds.items()},
            {k: (v.lower, v.upper) for k, v in fwd.bounds.items()}, state, jg)


def assert_same_rows(got_pair, want_pair, label: str) -> None:
    """Windowed bounds (per node, per tile) equal the dense ones to float64 summation order."""
    for got, want in zip(got_pair, want_pair):
        assert got.keys() == want.keys()
        for k in want:
            for a, b in zip(got[k], want[k]):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=f"{label} node {k}")


@pytest.mark.parametrize("name,net,shape", NETS, ids=[n[0] for n in NETS])
@pytest.mark.parametrize("iterations", [0, 3])
def test_windowed_rows_equal_dense_rows(tile, name, net, shape, iterations):
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dense, dense_f, _, _ = _bounds(net, x, 0.05, 0, iterations)
    for size in (1, 3, 4):
        win, win_f, _, _ = _bounds(net, x, 0.05, size, iterations)
        assert_same_rows((win, win_f), (dense, dense_f), f"{name} tile {size}")


@pytest.mark.parametrize("name,net,shape", NETS, ids=[n[0] for n in NETS])
def test_windowed_gradient_bounds_contain_sampled_gradients(tile, name, net, shape):
    crown.WINDOW_TILE = 2
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(1, *shape, generator=gen, dtype=torch.float64)
    eps = 0.05
    net = net.double()
    lo, hi = lipbound.jacobian_bounds(net, x, eps, data_range=(0.0, 1.0))
    pts = (x + eps * (2 * torch.rand(300, *shape, generator=gen, dtype=torch.float64) - 1))
    pts = pts.clamp(0.0, 1.0).requires_grad_(True)
    out = net(pts)
    for s in range(out.shape[1]):
        g, = torch.autograd.grad(out[:, s].sum(), pts, retain_graph=True)
        assert (g >= lo[s] - 1e-9).all() and (g <= hi[s] + 1e-9).all()


def test_node_rows_subset_equal_dense(tile):
    """Bounds of selected elements only (stable neurons skipped) match the dense rows."""
    _, net, shape = NETS[3]
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    graph = trace(net.double(), x)
    dom = LpBall(x, torch.tensor([0.1], dtype=torch.float64), float("inf"))
    state = prepare_state(graph, dom, "ibp")
    name = next(n.name for n in graph.nodes if len(n.shape) == 3 and n.op == "add")
    rows = torch.arange(0, graph[name].numel, 7)
    out = {}
    for size in (0, 2):
        crown.WINDOW_TILE = size
        out[size] = crown_node_bounds(state, name, rows)
    torch.testing.assert_close(out[2].lower, out[0].lower, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out[2].upper, out[0].upper, rtol=1e-9, atol=1e-12)


def test_row_cap_raises_problem_too_large(monkeypatch):
    _, net, shape = NETS[0]
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(5))
    monkeypatch.setattr(crown, "MAX_ELEMENTS_PER_ROW", 100)
    with pytest.raises(ProblemTooLargeError, match="MAX_ELEMENTS_PER_ROW"):
        lipbound.local_lipschitz(net.float(), x, 0.05)


def test_out_of_memory_chunks_are_bounded_in_halves(monkeypatch):
    _, net, shape = NETS[3]
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    net = net.double()
    want = lipbound.jacobian_bounds(net, x, 0.05)
    real = crown._upper
    seen = []

    def small_memory(state, name, A, iterations):
        seen.append(A.shape[1])
        if A.shape[1] > 3:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ...")
        return real(state, name, A, iterations)

    monkeypatch.setattr(crown, "_upper", small_memory)
    got = lipbound.jacobian_bounds(net, x, 0.05)
    assert max(seen) > 3 and any(s <= 3 for s in seen)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    monkeypatch.setattr(crown, "_upper", lambda *a: (_ for _ in ()).throw(
        RuntimeError("can't allocate memory")))
    with pytest.raises(ProblemTooLargeError, match="does not fit in memory"):
        lipbound.jacobian_bounds(net, x, 0.05)


def test_small_chunk_cap_gives_the_same_bounds(monkeypatch):
    """A tiny MAX_ELEMENTS_PER_CHUNK bounds one element per chunk: same bounds, no error.
    (The forward optimisation's early stop is switched off: it is decided per chunk, so with
    it the steps, not the chunking, would differ.)"""
    monkeypatch.setattr(jacobian_bound, "FORWARD_STOP_REL", None)
    _, net, shape = NETS[3]
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    net = net.double()
    want = lipbound.jacobian_bounds(net, x, 0.05)
    monkeypatch.setattr(crown, "MAX_ELEMENTS_PER_CHUNK", 1)
    got = lipbound.jacobian_bounds(net, x, 0.05)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("A_shape,t_shape,dtype", [
    ((5, 7, 12), (5, 1, 12), torch.float64),   # one value per batch row: matrix-vector path
    ((5, 7, 3, 4), (1, 1, 3, 4), torch.float64),  # shared value, broadcast over the batch
    ((5, 7, 3, 4), (3, 4), torch.float64),     # an offset [*shape]: elementwise path
    ((5, 7, 12), (5, 1, 12), torch.float32),   # float32: elementwise path
    ((5, 7, 12), (5, 7, 12), torch.float64),   # a value per row and spec row
])
def test_dense_dot_sums_every_product_once(A_shape, t_shape, dtype):
    """windows.dot of a dense A is sum over elements of A * t, [B, S], on every path, within
    the rounding of an n-term sum in any order (gamma_n of the sum of |products|)."""
    from lipbound.propagate.windows import dot

    g = torch.Generator().manual_seed(7)
    A = torch.randn(*A_shape, generator=g, dtype=torch.float64).to(dtype)
    t = torch.randn(*t_shape, generator=g, dtype=torch.float64).to(dtype)
    got = dot(A, t)
    A64, t64 = A.double(), t.double()
    ref = (A64 * t64).flatten(2).sum(-1)
    n = A[0, 0].numel()
    u = torch.finfo(dtype).eps / 2
    mag = (A64 * t64).abs().flatten(2).sum(-1)
    assert got.shape == ref.shape == A_shape[:2] and got.dtype == dtype
    assert bool(((got.double() - ref).abs() <= 2 * n * u * mag + 1e-300).all())
