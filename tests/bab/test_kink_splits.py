"""Branch and bound at the kinks of piecewise-linear activations (hardtanh, relu6, ...).

The ops state their kinks (:meth:`lipbound.ops.base.Op.kinks`); the sign search splits an
unstable pre-activation at a kink into ``z <= t`` and ``z >= t``. On one-hidden-layer MLPs
with 2 inputs the exact extrema of ``C f`` over the box are found by enumerating the vertices
of the linear regions (box corners, kink lines against box edges, pairs of kink lines):
the search's certified bounds must contain them, its attained values must not pass them, and
its bounds must close at least half of CROWN's excess over the exact range within 120
domains (kink splits clamp bounds and enter CROWN with beta multipliers, but get no LP
feasibility checks, so the search need not reach the exact extrema that soon). Under random
kink splits, sampled points of each sub-domain stay inside its forward bounds and its
gradient bounds.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import lipbound
from lipbound.api import _setup
from lipbound.bab.outputs import bab_output_bounds, bab_relu_output_bounds
from lipbound.bab.relu_split import LipschitzSearch
from lipbound.graph.shapes import split_points
from lipbound.jacobian.attained import row_gradients

pytestmark = pytest.mark.usefixtures("one_thread")

DT = torch.float64
ACTS = {"hardtanh": lambda: nn.Hardtanh(-0.5, 0.5), "relu6": nn.ReLU6}


def _net(act: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 8), ACTS[act](), nn.Linear(8, 2)).double().eval()
    with torch.no_grad():
        net[0].weight.mul_(3.0)  # several kinks inside the box
    return net


def _region_vertices(net: nn.Module, x0: torch.Tensor, eps: float) -> torch.Tensor:
    """Every vertex of the arrangement of the kink lines ``w_j x + b_j = t`` inside the box
    (the extrema of a function linear on each cell lie there)."""
    lo, hi = x0 - eps, x0 + eps
    W, b = net[0].weight.detach(), net[0].bias.detach()
    kinks = (net[1].min_val, net[1].max_val)  # nn.ReLU6 is a Hardtanh(0, 6)
    lines = [(W[j], float(t - b[j])) for j in range(W.shape[0]) for t in kinks]  # w x = c
    pts = [torch.stack([lo[0] if i == 0 else hi[0], lo[1] if k == 0 else hi[1]])
           for i in (0, 1) for k in (0, 1)]
    for w, c in lines:  # against the box edges
        for d in (0, 1):
            for v in (lo[d], hi[d]):
                if abs(float(w[1 - d])) > 1e-12:
                    p = torch.empty(2, dtype=DT)
                    p[d], p[1 - d] = v, (c - w[d] * v) / w[1 - d]
                    pts.append(p)
    for (w1, c1), (w2, c2) in itertools.combinations(lines, 2):
        M = torch.stack([w1, w2])
        if abs(float(torch.linalg.det(M))) > 1e-12:
            pts.append(torch.linalg.solve(M, torch.tensor([c1, c2], dtype=DT)))
    P = torch.stack(pts)
    inside = ((P >= lo - 1e-12) & (P <= hi + 1e-12)).all(1)
    return torch.minimum(torch.maximum(P[inside], lo), hi)


def _exact_case(act: str, seed: int):
    """(net, x0, eps, exact lower, exact upper, traced, C, domain): a two-input net on an l_inf ball
    of radius 0.6, the exact extrema from every vertex of its linear regions."""
    net = _net(act, seed)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(2, generator=gen, dtype=DT) * (6.0 if act == "relu6" else 0.2)
    eps = 0.6
    with torch.no_grad():
        y = net(_region_vertices(net, x0, eps))
    traced, _, C, dom = _setup(net, x0[None], eps, math.inf, None, None, DT)
    return net, x0, eps, y.min(0).values, y.max(0).values, traced, C, dom


def test_split_points_are_the_ops_kinks():
    net = _net("hardtanh", 0)
    traced, *_ = _setup(net, torch.zeros(1, 2, dtype=DT), 0.1, math.inf, None, None, DT)
    pts = split_points(traced.graph)
    assert [(sp.point, sp.sign) for sp in pts] == [(-0.5, False), (0.5, False)]
    assert len({sp.node for sp in pts}) == 1


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("seed", [0, 1])
def test_kink_bab_contains_the_exact_extrema_and_tightens_crown(act, seed):
    net, x0, eps, exact_lo, exact_hi, traced, C, dom = _exact_case(act, seed)
    lo, up, res = bab_relu_output_bounds(net, traced.graph, C, dom, timeout=60.0,
                                         max_domains=120, progress=False)
    slack = 1e-9
    assert (lo <= exact_lo + slack).all() and (exact_hi <= up + slack).all()
    assert (res.lower[:2] <= exact_hi + slack).all()  # attained values are attained
    assert (res.lower[2:] <= -exact_lo + slack).all()
    crown = lipbound.output_bounds(net, x0[None], eps, method="crown", progress=False)
    assert (up <= crown.upper + 1e-9).all() and (lo >= crown.lower - 1e-9).all()
    exact_gap = float((exact_hi - exact_lo).sum())
    excess_crown = float((crown.upper - crown.lower).sum()) - exact_gap
    excess_bab = float((up - lo).sum()) - exact_gap
    assert excess_bab <= 0.5 * excess_crown + 1e-9, (excess_bab, excess_crown)
    assert excess_crown < 1e-9 or res.domains_bounded > 1


def _random_kink_signs(srch, D: int, gen) -> list[torch.Tensor]:
    """Random signs (-1, +1 each with probability 0.1, else 0) per split variable (some
    domains may be empty)."""
    out = []
    for n in srch.names:
        u = torch.rand(D, srch.graph[n].numel, generator=gen, dtype=DT)
        out.append(torch.where(u < 0.1, -1.0, torch.where(u > 0.9, 1.0, 0.0)).to(DT))
    return out


@pytest.mark.parametrize("act", sorted(ACTS))
def test_kink_domains_contain_their_points_and_gradients(act):
    """Under random kink splits, every sampled point satisfying a domain's splits has its
    pre-activations inside the domain's forward bounds and its gradient norm (autograd: one
    element of the Clarke set) below the domain's bound."""
    net = _net(act, 3)
    gen = torch.Generator().manual_seed(3)
    x0 = torch.rand(1, 2, generator=gen, dtype=DT) * (6.0 if act == "relu6" else 0.2)
    eps = 0.6
    traced, _, C, dom = _setup(net, x0, eps, math.inf, None, None, DT)
    srch = LipschitzSearch(net, traced.graph, C, dom, 1.0)
    D = 12
    signs = _random_kink_signs(srch, D, gen)
    ub, los, ups, _ = srch.bound(signs)
    pts = x0 + eps * (2 * torch.rand(4000, 2, generator=gen, dtype=DT) - 1)
    with torch.no_grad():
        z = net[0](pts)
    G = row_gradients(net, pts, C)  # [S, N, 2]
    norms = G.abs().sum(-1).t()  # [N, S]: the dual (l_1) norms for l_inf balls
    checked = 0
    for d in range(D):
        ok = torch.ones(len(pts), dtype=torch.bool)
        for sp, s in zip(srch.points, signs):
            ok &= ((s[d] <= 0) | (z >= sp.point)).all(1) & ((s[d] >= 0) | (z <= sp.point)).all(1)
        if not ok.any():
            continue
        checked += 1
        for sp, lo, up in zip(srch.points, los, ups):  # bounds relative to the point
            rel = z[ok] - sp.point
            assert (rel >= lo[d] - 1e-9).all() and (rel <= up[d] + 1e-9).all()
        assert (norms[ok] <= ub[d] + 1e-9).all(), (norms[ok].max(0).values, ub[d])
    assert checked >= 2


def test_open_box_moves_split_ends_one_float_inward():
    """Under a kink split the derivative nodes see the node's bounds opened by one float at
    the split point only (each side takes its own one-sided derivative there)."""
    from lipbound.bounds.interval import Interval
    from lipbound.bounds.restriction import Restriction
    from lipbound.ops import registry
    from lipbound.ops.piecewise import hardtanh_params

    inf = math.inf
    box = Interval(torch.tensor([[-0.5, -inf, -inf]], dtype=DT),
                   torch.tensor([[inf, -0.5, inf]], dtype=DT))
    iv = Interval(torch.tensor([[-0.5, -1.0, -0.5]], dtype=DT),
                  torch.tensor([[0.2, -0.5, 0.2]], dtype=DT))
    opened = Restriction(boxes={"z": box}).open_box("z", iv)
    t = torch.tensor(-0.5, dtype=DT)
    assert opened.lower[0, 0] == torch.nextafter(t, torch.tensor(inf, dtype=DT))
    assert opened.upper[0, 1] == torch.nextafter(t, torch.tensor(-inf, dtype=DT))
    assert torch.equal(opened.lower[0, 1:], iv.lower[0, 1:])  # no split: unchanged
    assert torch.equal(opened.upper[0, [0, 2]], iv.upper[0, [0, 2]])
    op = registry.get("pwl")
    kind, dparams = op.derivative(hardtanh_params(-0.5, 0.5))
    d = registry.get(kind).ibp(dparams, opened)
    assert d.lower.tolist() == [[1.0, 0.0, 0.0]] and d.upper.tolist() == [[1.0, 0.0, 1.0]]


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("split", ["input", "mixed"])
def test_input_and_mixed_branchers_contain_the_exact_kink_extrema(act, split):
    """The one search with input halves ("input", kink splits only on boxes too small to
    halve) or halves then kink splits ("mixed"): certified bounds contain the exact extrema,
    attained values do not pass them, and the bounds are no looser than CROWN's."""
    net, x0, eps, exact_lo, exact_hi, traced, C, dom = _exact_case(act, 2)
    lo, up, res = bab_output_bounds(net, traced.graph, C, dom, split=split, timeout=60.0,
                                    max_domains=300, progress=False)
    slack = 1e-9
    assert (lo <= exact_lo + slack).all() and (exact_hi <= up + slack).all()
    assert (res.lower[:2] <= exact_hi + slack).all() and (res.lower[2:] <= -exact_lo + slack).all()
    crown = lipbound.output_bounds(net, x0[None], eps, method="crown", progress=False)
    assert (up <= crown.upper + 1e-9).all() and (lo >= crown.lower - 1e-9).all()
    assert res.domains_bounded > 1


@pytest.mark.parametrize("seed", [0, 1])
def test_derivative_domains_with_kink_splits_enclose_sampled_derivatives(seed):
    """The monotonicity audit's objective on a hardtanh net, on sub-boxes with random kink
    splits (each taken from the side of a sampled point, so feasible): every sampled point
    of the sub-box satisfying the splits has its autograd derivative inside the bounds."""
    from lipbound.bab.derivative import DerivativeSearch
    from lipbound.graph.trace import trace

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 8), nn.Hardtanh(-0.5, 0.5), nn.Linear(8, 1)).double()
    lo, hi = -torch.ones(3, dtype=DT), torch.ones(3, dtype=DT)
    graph = trace(net.eval(), lo[None])
    c = torch.ones(1, 1, dtype=DT)
    for j in range(3):
        srch = DerivativeSearch(net, graph, c, lo, hi, j)
        assert [sp.sign for sp in srch.points] == [False, False]  # kinks at -0.5 and 0.5
        srch.bound([torch.zeros(1, 8, dtype=DT)] * 2, boxes=(lo[None], hi[None]))  # the root
        blo = -1 + torch.rand(3, generator=g, dtype=DT)
        bhi = blo + torch.rand(3, generator=g, dtype=DT)
        pts = blo + torch.rand(20000, 3, generator=g, dtype=DT) * (bhi - blo)
        with torch.no_grad():
            z = net[0](pts)
        pick = int(torch.randint(len(pts), (1,), generator=g))
        signs = [torch.where(torch.rand(8, generator=g) < 0.5, torch.sign(z[pick] - sp.point),
                             torch.zeros(8, dtype=DT)) for sp in srch.points]
        ub = srch.bound([s[None] for s in signs], boxes=(blo[None], bhi[None]))[0][0]
        keep = torch.ones(len(pts), dtype=torch.bool)
        for sp, s in zip(srch.points, signs):
            keep &= (s * (z - sp.point) >= 0).all(1)
        x = pts[keep].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(net(x).sum(), x)
        assert keep.sum() > 0
        assert bool((grad[:, j] >= -ub[0] - 1e-9).all() and (grad[:, j] <= ub[1] + 1e-9).all())
