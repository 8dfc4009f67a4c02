"""Children bounded with their parents' forward bounds (lipbound.bab.relu_split.SignSearch.
known_forward): the bounds of a batch of children, each knowing its own parent's, enclose the
outputs and pre-activations of sampled points of each child; the known bounds are the
intersection of the root's and the parent's, and kinks away from 0 are not taken."""

from __future__ import annotations

import pytest
import torch

from lipbound.bab.outputs import OutputSearch
from lipbound.bounds.domains import LpBall
from lipbound.graph.shapes import SplitPoint
from lipbound.graph.trace import trace
from tests.oracles import random_sequential

N_IN, WIDTH = 3, 10


def _setup(seed: int):
    net = random_sequential([N_IN, WIDTH, WIDTH, 2], seed, 0.1 * (seed % 2)).double().eval()
    lo, hi = -torch.ones(1, N_IN, dtype=torch.float64), torch.ones(1, N_IN, dtype=torch.float64)
    dom = LpBall(torch.zeros(1, N_IN, dtype=torch.float64),
                 torch.ones(1, dtype=torch.float64), float("inf"), lo, hi)
    C = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    return net, OutputSearch(net, trace(net, lo), C, dom)


def _preacts(net, x):
    with torch.no_grad():
        z1 = net[0](x)
        z2 = net[2](net[1](z1))
        return [z1, z2], net(x)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_children_knowing_their_parents_bounds_enclose_sampled_points(seed):
    """Four parents (random sign splits taken from a sampled point, so feasible, on random
    sub-boxes), each bounded; their children (one more split, from the same point) bounded
    in one batch, each with its own parent's forward bounds. Every sampled point of a child
    (in its box, satisfying its signs) has its pre-activations inside the child's forward
    bounds and its spec values C f, -C f below the child's ub."""
    g = torch.Generator().manual_seed(seed)
    net, srch = _setup(seed)
    zero = [torch.zeros(1, WIDTH, dtype=torch.float64)] * 2
    srch.bound(zero, boxes=(-torch.ones(1, N_IN, dtype=torch.float64),
                            torch.ones(1, N_IN, dtype=torch.float64)))  # the root
    boxes, psigns, csigns, pts = [], [], [], []
    for _ in range(4):
        blo = -1 + torch.rand(N_IN, generator=g, dtype=torch.float64)
        bhi = blo + torch.rand(N_IN, generator=g, dtype=torch.float64) * (1 - blo)
        x = blo + torch.rand(4000, N_IN, generator=g, dtype=torch.float64) * (bhi - blo)
        z, _ = _preacts(net, x)
        pick = int(torch.randint(len(x), (1,), generator=g))
        ps = [torch.where(torch.rand(WIDTH, generator=g) < 0.3, torch.sign(zz[pick]),
                          torch.zeros(WIDTH, dtype=torch.float64)) for zz in z]
        cs = [s.clone() for s in ps]
        free = (cs[1] == 0).nonzero().flatten()
        cs[1][free[0]] = torch.sign(z[1][pick, free[0]])
        boxes.append((blo, bhi))
        psigns.append(ps)
        csigns.append(cs)
        pts.append(x)
    blo = torch.stack([b[0] for b in boxes])
    bhi = torch.stack([b[1] for b in boxes])
    stack = lambda sg: [torch.stack([s[i] for s in sg]) for i in range(2)]  # noqa: E731
    _, plo, pup, _ = srch.bound(stack(psigns), boxes=(blo, bhi))
    ub, clo, cup, _ = srch.bound(stack(csigns), boxes=(blo, bhi), parent=(plo, pup))
    for d in range(4):
        z, y = _preacts(net, pts[d])
        keep = torch.ones(len(pts[d]), dtype=torch.bool)
        for s, zz in zip(csigns[d], z):
            keep &= (s * zz >= 0).all(1)
        assert keep.sum() > 0
        for li, zz in enumerate(z):
            assert bool((zz[keep] >= clo[li][d] - 1e-9).all())
            assert bool((zz[keep] <= cup[li][d] + 1e-9).all())
            assert bool((clo[li][d] >= plo[li][d] - 1e-12).all())  # never looser than parent
        v = y[keep] @ srch.CC.t()
        assert bool((v <= ub[d] + 1e-9).all())


def test_known_bounds_intersect_root_and_parent_and_skip_kinks_away_from_zero():
    """known_forward: elementwise max of lower bounds and min of upper bounds of the root's
    and the parent's; a split point whose kink is not at 0 keeps the root's bounds."""
    _, srch = _setup(0)
    zero = [torch.zeros(1, WIDTH, dtype=torch.float64)] * 2
    srch.bound(zero, boxes=(-torch.ones(1, N_IN, dtype=torch.float64),
                            torch.ones(1, N_IN, dtype=torch.float64)))
    g = torch.Generator().manual_seed(5)
    plo = [-torch.rand(3, WIDTH, generator=g, dtype=torch.float64) for _ in range(2)]
    pup = [torch.rand(3, WIDTH, generator=g, dtype=torch.float64) for _ in range(2)]
    known = srch.known_forward((plo, pup))
    for sp, lo, up in zip(srch.points, plo, pup):
        root = srch.root_forward[sp.node]
        got = known[sp.node]
        assert torch.equal(got.lower.reshape(3, -1),
                           torch.maximum(root.lower.reshape(1, -1), lo))
        assert torch.equal(got.upper.reshape(3, -1),
                           torch.minimum(root.upper.reshape(1, -1), up))
    srch.points = [SplitPoint(sp.node, 0.5, False) for sp in srch.points]
    kept = srch.known_forward((plo, pup))
    for sp in srch.points:
        assert kept[sp.node] is srch.root_forward[sp.node]
