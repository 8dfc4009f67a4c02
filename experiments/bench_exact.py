"""Benchmark of lipbound's exact baselines (JSON output).

- exact MILP (LipMIP-style, HiGHS) for the l_inf local Lipschitz constant (gradient l1 norm) of
  random 10-64-64-1 (eps 0.1) and 10-32-32-1 (eps 0.5) ReLU nets with PyTorch's default init;
- LipSDP-Neuron (SCS, certified in float64) versus the naive product of spectral norms on a random
  10-50-50-10 net.

Nets: ``lipbound.exact.testing.random_sequential(sizes, seed)`` (torch.manual_seed(seed), then
nn.Linear's default init); centres x0 = numpy default_rng(seed).standard_normal(n_in).

The MILP's big-M constants come from a pre-activation bound function in ``BOUND_FUNCTIONS``
(name -> f(mlp, x0, eps, p) returning per-layer (l, u) or None for interval arithmetic); a CROWN
variant can be registered there later and selected with ``--bounds interval crown``.

    python experiments/bench_exact.py [--timeout 600] [--out experiments/out/bench_exact.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch

from lipbound.exact.domain import dual_norm, make_ball
from lipbound.exact.lipsdp import lipsdp_neuron
from lipbound.exact.milp import milp_local_lipschitz
from lipbound.exact.mlp import MLP
from lipbound.exact.testing import random_mlp, sampled_lower


def interval_bounds_fn(mlp: MLP, x0, eps, p):
    """Default: let the MILP use its own interval arithmetic."""
    return None


BOUND_FUNCTIONS = {"interval": interval_bounds_fn}

MILP_CASES = [
    {"name": "mlp-10-64-64-1", "sizes": [10, 64, 64, 1], "seed": 0, "eps": 0.1},
    {"name": "mlp-10-32-32-1", "sizes": [10, 32, 32, 1], "seed": 1, "eps": 0.5},
]
SDP_CASES = [{"name": "mlp-10-50-50-10", "sizes": [10, 50, 50, 10], "seed": 2}]


def milp_case(case: dict, bounds: str, timeout: float, p=math.inf) -> dict:
    mlp = random_mlp(case["sizes"], case["seed"])
    x0 = torch.from_numpy(np.random.default_rng(case["seed"]).standard_normal(case["sizes"][0]))
    t0 = time.perf_counter()
    pre = BOUND_FUNCTIONS[bounds](mlp, x0, case["eps"], p)
    t_bounds = time.perf_counter() - t0
    r = milp_local_lipschitz(mlp, x0, case["eps"], p, preact_bounds=pre, timeout=timeout)
    sampled = sampled_lower(mlp, x0, case["eps"], p, n=4000, seed=0)
    ball = make_ball(mlp, x0, case["eps"], p)
    assert ball.contains(r.witness.numpy())
    return {
        "case": case["name"],
        "eps": case["eps"],
        "norm": "inf" if p == math.inf else p,
        "gradient_norm": dual_norm(p),
        "bounds": bounds,
        "status": r.status,
        "value": r.value,
        "lower": r.lower,
        "upper": r.upper,
        "gap": r.upper - r.lower,
        "time_s": r.solve_time + t_bounds,
        "bounds_time_s": t_bounds,
        "solver_time_s": r.details["solver_time"],
        "n_binaries": r.n_binaries,
        "n_unstable": r.n_unstable,
        "unstable_per_layer": r.details["unstable_per_layer"],
        "mip_nodes": r.details["mip_nodes"],
        "interval_upper": r.details["interval_upper"],
        "sampled_lower_4000": sampled,
        "timeout_s": timeout,
    }


def sdp_case(case: dict) -> dict:
    mlp = random_mlp(case["sizes"], case["seed"])
    r = lipsdp_neuron(mlp)
    # a sampled lower bound on the global l2 constant: largest Jacobian spectral norm seen
    net = mlp.to_sequential()
    g = torch.Generator().manual_seed(0)
    X = 3 * torch.randn(2000, case["sizes"][0], generator=g, dtype=torch.float64)
    with torch.no_grad():
        J = torch.func.vmap(torch.func.jacrev(net))(X)
    sampled = float(torch.linalg.matrix_norm(J, ord=2).max())
    return {
        "case": case["name"],
        "status": r.status,
        "certified": r.certified,
        "sdp_value": r.sdp_value,
        "naive": r.naive,
        "ratio_certified_to_naive": r.certified / r.naive,
        "sampled_lower_2000": sampled,
        "time_s": r.solve_time,
        "sdp_time_s": r.details["sdp_time"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=float, default=600.0, help="MILP time limit per case (s)")
    ap.add_argument("--bounds", nargs="+", default=["interval"], choices=sorted(BOUND_FUNCTIONS))
    ap.add_argument("--cases", nargs="+", default=None, help="subset of case names")
    ap.add_argument("--out", default=os.path.join("experiments", "out", "bench_exact.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    want = (lambda n: True) if args.cases is None else (lambda n: n in args.cases)
    report = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": os.cpu_count(), "torch": torch.__version__},
        "milp": [milp_case(c, b, args.timeout) for c in MILP_CASES if want(c["name"])
                 for b in args.bounds],
        "lipsdp": [sdp_case(c) for c in SDP_CASES if want(c["name"])],
    }
    text = json.dumps(report, indent=2)
    print(text)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
