"""HiGHS's process-wide thread pool must not make a later MILP fail.

HiGHS sizes one global thread pool at the first solve of a process; a later solve that names
another ``threads`` count failed outright (cvxpy: "Solver 'HIGHS' failed"). The CI run after
session 10 hit it: ``method="exact"`` tests (default count) ran first, then every MILP of
verify (one thread) failed and left its regions undecided. solve_with_highs sizes the pool
for each solve that names a count.
"""

from __future__ import annotations

import cvxpy as cp
import pytest

from lipbound.exact.milp import solve_with_highs


def _knapsack() -> tuple[cp.Problem, cp.Variable]:
    x = cp.Variable(3, integer=True)
    prob = cp.Problem(cp.Minimize(cp.sum(x) + 0.5 * x[0]), [x >= 0.5, x <= 4])
    return prob, x


@pytest.mark.parametrize("counts", [(None, 1), (1, 2, None, 1), (2, 1, 2)])
def test_solves_with_changing_thread_counts_all_succeed(counts):
    for threads in counts:
        prob, x = _knapsack()
        opts = {} if threads is None else {"threads": threads}
        solve_with_highs(prob, opts, f"a MILP with threads={threads}")
        assert prob.status == cp.OPTIMAL and abs(prob.value - 3.5) < 1e-9
        assert list(x.value.round()) == [1, 1, 1]
