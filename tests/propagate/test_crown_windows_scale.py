"""Windowed CROWN rows through scale-shifts that the normaliser cannot fold (a per-channel
or scalar scale after an activation, between convolutions): the window rule of ``scale_shift``
(:meth:`~lipbound.ops.base.LinearOp.window_map`, form ``scale``) on forward rows and on the
transposes of Jacobian graphs must give the dense rows' bounds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lipbound.graph.trace import trace
from lipbound.propagate import intermediate
from tests.propagate.test_crown_windows import _bounds, assert_same_rows

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tile():
    old = intermediate.WINDOW_TILE
    yield
    intermediate.WINDOW_TILE = old


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 2, 3, stride=2)
        self.fc = nn.Linear(2 * 4 * 4, 3)
        g = torch.Generator().manual_seed(5)
        self.register_buffer("s", torch.rand(1, 3, 1, 1, generator=g) + 0.5)
        self.register_buffer("t", torch.randn(1, 3, 1, 1, generator=g))

    def forward(self, x):
        a = torch.relu(self.c1(x)) * self.s + self.t  # per-channel, after an activation
        b = torch.relu(self.c2(a)) * 0.5  # a scalar scale
        return self.fc(torch.tanh(b).flatten(1))


def test_windowed_rows_through_scale_shifts_equal_dense_rows(tile):
    torch.manual_seed(6)
    net = Scaled().eval()
    x = torch.rand(1, 1, 10, 10, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ops = [n.op for n in trace(net.double(), x).nodes]
    assert ops.count("scale_shift") >= 2  # not folded away
    dense, dense_f, _, _ = _bounds(net, x, 0.5, 0)  # wide: unstable ReLUs after the scale
    for size in (1, 3):
        win, win_f, _, _ = _bounds(net, x, 0.5, size)
        assert_same_rows((win, win_f), (dense, dense_f), f"tile {size}")
