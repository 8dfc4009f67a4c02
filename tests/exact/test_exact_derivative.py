"""The derivative MILP (lipbound.exact.derivative) against an enumeration of every activation
pattern on tiny ReLU / LeakyReLU nets: its certified bounds equal the least and greatest
chain-rule derivative over the box, its witnesses lie strictly inside their regions and
attain their value (autograd), and the margin re-solve only finds genuine regions."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from lipbound.exact.derivative import DerivativeMilp, engine_derivative_milp
from lipbound.exact.domain import pattern_region
from lipbound.graph.trace import trace
from tests.oracles import random_sequential

SIZES = [(3, 4, 4, 1), (2, 5, 3, 1), (3, 6, 1), (2, 3, 3, 2)]


def feasible_patterns(mlp, lo, hi):
    """Every pattern of the hidden neurons whose closed region meets the box [lo, hi] (all
    2^N patterns, an LP each): the oracle."""
    sizes = mlp.hidden_sizes
    out = []
    for bits in itertools.product([False, True], repeat=sum(sizes)):
        pat, k = [], 0
        for n in sizes:
            pat.append(np.array(bits[k:k + n]))
            k += n
        G, g = pattern_region(mlp, pat)
        res = linprog(np.zeros(len(lo)), A_ub=-G, b_ub=g + 1e-12, bounds=list(zip(lo, hi)),
                      method="highs")
        if res.status == 0:
            out.append(pat)
    return out


def _case(sizes, seed, slope):
    net = random_sequential(sizes, seed, slope).double()
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-1.5, 0.0, sizes[0])
    hi = lo + rng.uniform(0.3, 2.0, sizes[0])
    c = np.zeros(sizes[-1])
    c[0] = 1.0
    if sizes[-1] > 1:
        c[1] = -0.5
    return net, lo, hi, c


@pytest.mark.parametrize("slope", [0.0, 0.1])
@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("sizes", SIZES)
def test_milp_matches_pattern_enumeration(sizes, seed, slope):
    net, lo, hi, c = _case(sizes, seed, slope)
    milp = DerivativeMilp(net, lo, hi, c)
    gen = torch.Generator().manual_seed(seed)
    x = torch.tensor(lo) + torch.rand(4000, len(lo), generator=gen,
                                      dtype=torch.float64) * torch.tensor(hi - lo)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad((net(x) @ torch.tensor(c)).sum(), x)
    grads = np.array([milp.mlp.gradient_for_pattern(p, c) for p in
                      feasible_patterns(milp.mlp, lo, hi)])
    for j in range(len(lo)):
        emin, emax = float(grads[:, j].min()), float(grads[:, j].max())
        rmin, rmax = milp.solve(j, 1), milp.solve(j, -1)
        assert rmin.status == rmax.status == "optimal"
        tol = 1e-7 * (1 + abs(emin) + abs(emax))
        # certified: below (above) every pattern's value, and exact up to the solver's gap
        assert rmin.lower <= emin + 1e-12 and rmin.lower >= emin - tol
        assert -rmax.lower >= emax - 1e-12 and -rmax.lower <= emax + tol
        assert float(grad[:, j].min()) >= rmin.lower and float(grad[:, j].max()) <= -rmax.lower
        for r in (rmin, rmax):
            if r.witness is None:  # an optimum only at a meeting of kinks: none claimed
                continue
            w = torch.tensor(r.witness, requires_grad=True)
            assert bool(((w >= torch.tensor(lo)) & (w <= torch.tensor(hi))).all())
            (gw,) = torch.autograd.grad(net(w[None])[0] @ torch.tensor(c), w)
            assert r.sign * float(gw[j]) == pytest.approx(r.attained, abs=1e-12)
            assert r.attained >= r.lower - 1e-12
            assert r.depth > 0


def test_margin_resolve_finds_the_thin_region_and_no_lower_bound():
    """f = x0 - 2 relu(x0 - 0.5) + 2 relu(x0 - 0.5 - w) on [-1, 1]^2 (x0 through
    relu(x0 + 3) - 3): slope -1 on a slab of width w only."""
    w = 1e-3
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))
        net[0].bias.copy_(torch.tensor([3.0, -0.5, -0.5 - w]))
        net[2].weight.copy_(torch.tensor([[1.0, -2.0, 2.0]]))
        net[2].bias.copy_(torch.tensor([-3.0]))
    net = net.double()
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    milp = DerivativeMilp(net, lo, hi)
    r = milp.solve(0, 1)
    assert r.lower == pytest.approx(-1.0, abs=1e-7) and r.lower <= -1.0
    m = milp.solve(0, 1, margin=1e-5)
    assert m.lower == -math.inf  # a margin problem bounds nothing
    assert m.attained == pytest.approx(-1.0) and m.witness is not None
    assert 0.5 < m.witness[0] < 0.5 + w
    too_thick = milp.solve(0, 1, margin=w)  # no region that deep has slope -1
    assert too_thick.attained is None or too_thick.attained >= 0.0


@pytest.mark.parametrize("seed", range(2))
def test_engine_big_m_gives_the_same_exact_values(seed):
    """CROWN's bounds on the joint graph as big-M constants change nothing but speed."""
    net, lo, hi, c = _case((3, 5, 4, 1), seed, 0.0)
    lo_t, hi_t = torch.tensor(lo), torch.tensor(hi)
    graph = trace(net, lo_t[None])
    em = engine_derivative_milp(graph, torch.tensor(c)[None], lo_t, hi_t)
    im = DerivativeMilp(net, lo, hi, c)
    for j in range(3):
        for s in (1, -1):
            assert em.solve(j, s).lower == pytest.approx(im.solve(j, s).lower, abs=1e-7)


def test_target_stops_at_a_solution_below_it_with_a_certified_bound():
    net, lo, hi, c = _case((3, 6, 5, 1), 4, 0.0)
    milp = DerivativeMilp(net, lo, hi, c)
    tried = 0
    for j in range(3):
        exact = milp.solve(j, 1)
        if exact.lower >= -1e-6:
            continue
        tried += 1
        r = milp.solve(j, 1, target=exact.lower / 4)
        assert r.status in ("target", "optimal")
        assert r.lower <= exact.lower + 1e-9  # still a certified lower bound
        if r.witness is not None:
            assert r.attained >= exact.lower - 1e-9
    assert tried > 0
