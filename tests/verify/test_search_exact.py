"""The verifier's search (proof goals, counterexamples from attained points) against exact
answers on small random ReLU networks.

Exact oracle: for a net ``W2 relu(W1 x + b1) + b2`` every activation pattern is a polyhedron
of the box on which the net is linear, so the largest margin ``max_x min_r (d_r - C_r f(x))``
of a conjunction ``C f <= d`` is the best of one LP per pattern (scipy's HiGHS). The
conjunction is reachable iff that margin is >= 0. Each case shifts ``d`` so that the exact
margin is +-0.05: the search must prove exactly the unreachable ones and find a confirmed
counterexample (a point whose forward pass satisfies every row) for the reachable ones.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lipbound.io.vnnlib import Conjunction, InputRegion
from lipbound.verify.falsify import Checker, SearchWitness
from lipbound.verify.prove import refute

linprog = pytest.importorskip("scipy.optimize").linprog


def _net(n_in: int, hidden: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, 3)).double().eval()
    return net


def exact_margin(net: torch.nn.Module, lo: np.ndarray, up: np.ndarray, C: np.ndarray,
                 d: np.ndarray) -> float:
    """max over x in [lo, up] of min_r (d_r - C_r f(x)), by enumerating activation patterns."""
    W1, b1 = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    W2, b2 = net[2].weight.detach().numpy(), net[2].bias.detach().numpy()
    n, h = W1.shape[1], W1.shape[0]
    best = -np.inf
    for s in itertools.product((0.0, 1.0), repeat=h):
        s = np.array(s)
        A = C @ W2 @ (s[:, None] * W1)  # C f(x) = A x + c on this pattern
        c = C @ (W2 @ (s * b1) + b2)
        sign = np.where(s > 0, -1.0, 1.0)  # active: W1 x + b1 >= 0; inactive: <= 0
        # variables (x, t): maximise t s.t. A x + c + t <= d, sign (W1 x + b1) <= 0
        A_ub = np.vstack([np.hstack([A, np.ones((len(d), 1))]),
                          np.hstack([sign[:, None] * W1, np.zeros((h, 1))])])
        b_ub = np.concatenate([d - c, -sign * b1])
        obj = np.zeros(n + 1)
        obj[-1] = -1.0
        bounds = [(float(a), float(b)) for a, b in zip(lo, up)] + [(None, None)]
        res = linprog(obj, A_ub=A_ub, b_ub=b_ub, bounds=bounds, method="highs")
        if res.status == 0:
            best = max(best, -res.fun)
    return best


def _case(seed: int, n_in: int, margin: float):
    net = _net(n_in, 6, seed)
    gen = torch.Generator().manual_seed(seed)
    C = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    base = torch.zeros(2, dtype=torch.float64)
    lo, up = -np.ones(n_in), np.ones(n_in)
    m0 = exact_margin(net, lo, up, C.numpy(), base.numpy())
    d = base - m0 + margin  # shifting every d_r by c shifts the exact margin by c
    assert abs(exact_margin(net, lo, up, C.numpy(), d.numpy()) - margin) < 1e-7
    region = InputRegion(torch.from_numpy(lo), torch.from_numpy(up), (Conjunction(C, d),))
    return net, region


@pytest.mark.parametrize("split", ["input", "mixed", "relu"])
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow),
                                  pytest.param(2, marks=pytest.mark.slow)])
@pytest.mark.parametrize("margin", [-0.05, 0.05])
def test_search_verdicts_agree_with_exact_patterns(split, seed, margin):
    net, region = _case(seed, 2, margin)
    checker = Checker(net, (2,))
    witness = SearchWitness(net, region, (2,), checker, torch.Generator().manual_seed(seed))
    done, _ = refute(net, region, [0], "bab", (2,), 30, split=split, witness_check=witness)
    if margin < 0:  # unreachable: proven, and nothing can be confirmed
        assert done == [0] and witness.found is None
    else:  # reachable: never proven; the search's points yield a real counterexample
        assert done == []
        assert witness.found is not None
        x, y = witness.found
        assert region.contains(x)
        with torch.no_grad():
            fx = net(x[None])[0]
        C, d = region.disjuncts[0]
        assert bool((C @ fx <= d).all()) and torch.equal(fx, y)


def test_violation_is_the_goal_margin_at_the_points():
    """Anytime.violation: <= 0 exactly where some goal (a disjunction of rows) fails."""
    from lipbound.bab.anytime import Anytime

    thr = torch.tensor([torch.inf, 1.0, 2.0, 0.5], dtype=torch.float64)
    run = Anytime(1.0, 0.0, 0.0, 10, stop_below=thr, groups=torch.tensor([-1, 0, 0, 1]),
                  goals_only=True)
    vals = torch.tensor([[9.0, 0.0, 0.0, 0.0],    # both goals hold: margins 2 and 0.5
                         [9.0, 1.5, 2.5, 0.0],    # goal 0 fails (both rows reach thresholds)
                         [9.0, 1.5, 1.0, 0.7]],   # goal 0 holds via row 2, goal 1 fails
                        dtype=torch.float64)
    assert torch.allclose(run.violation(vals), torch.tensor([0.5, -0.5, -0.2], dtype=torch.float64))


def test_a_domain_whose_goal_fails_is_never_pruned_by_attained_values():
    """goals_only: a conjunction's rows can each sit below the best attained value on a
    domain where no single row proves the goal (prop_4 of ACAS Xu ended 'exhausted',
    unproven, when such domains were pruned like a maximum's)."""
    from lipbound.bab.anytime import Anytime

    thr = torch.tensor([0.0, 0.0], dtype=torch.float64)
    L = torch.tensor([5.0, 5.0], dtype=torch.float64)  # attained elsewhere, far above
    ub = torch.tensor([[1.0, 2.0], [-1.0, 2.0]], dtype=torch.float64)  # goal fails / holds
    kw = {"stop_below": thr, "groups": torch.tensor([0, 0])}
    assert Anytime(1.0, 0.0, 0.0, 10, goals_only=True, **kw).alive(ub, L).tolist() == [
        True, False]
    assert Anytime(1.0, 0.0, 0.0, 10, **kw).alive(ub, L).tolist() == [False, False]


def test_input_score_picks_the_best_coordinate_of_positive_width():
    from lipbound.bab.search import Brancher

    lo = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    up = torch.tensor([[1.0, 1.0, 0.0], [1.0, 2.0, 1.0]], dtype=torch.float64)
    scores = torch.tensor([[0.1, 0.2, 9.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    b = Brancher("input", input_score=lambda a, c: scores)
    # row 0: coordinate 2 scores best but has no width; row 1: all zero -> the widest
    assert b._coords(lo, up, up - lo).tolist() == [1, 1]
