"""Soundness fuzzer over the user-model sweep's cases (session 14).

For every case of ``user_model_sweep.py`` and every seed: the weights are scaled by a random
factor in {0.5, 1, 2, 3}, then a random eps in {0.01, 0.1, 0.3, 1}, norm in {l_inf, l_2, l_1}
and data range (none, or [0, 1] with probability 0.4) are drawn. 1,500 points of the set
(half on its boundary: box vertices or sphere points) are evaluated in float64 and with the
model's own float32 forward, and their gradients in float64. It prints every

- ``out-<method>`` violation: a sampled output outside ``output_bounds`` (ibp, crown,
  alpha-crown), with no tolerance;
- ``lip-<method>`` violation: a sampled gradient's dual norm above ``local_lipschitz``
  (naive, ibp, crown, alpha-crown), relative tolerance 1e-7 (float64 autograd), or a lower
  bound above the upper one;
- ``jac-<method>`` violation: a sampled gradient outside ``jacobian_bounds`` (ibp, crown),
  relative tolerance 1e-7;

and every refusal (once per case), then ``done <case>``. Nothing printed between the
``done`` lines but refusals means no violation. Cases the harness cannot run (a model whose
float64 copy fails, an input given with its batch dimension) say so once.

    OMP_NUM_THREADS=1 python experiments/soundness_fuzz.py --seeds 0 4 [CASE ...]
"""

from __future__ import annotations

import argparse
import copy
import math
import random

import torch
from user_model_sweep import cases

import lipbound

DUAL = {math.inf: 1, 2: 2, 1: math.inf}


def ball_points(x: torch.Tensor, eps: float, p: float, n: int, g: torch.Generator,
                clip: bool) -> torch.Tensor:
    """n points of the l_p ball (float64, flat), half on its boundary, clipped to [0, 1]."""
    d = x.numel()
    if p == math.inf:
        u = torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1
        u[: n // 2] = torch.sign(u[: n // 2])
    else:
        z = torch.randn(n, d, generator=g, dtype=torch.float64)
        if p == 1:
            z = torch.sign(z) * -torch.log(torch.rand(n, d, generator=g, dtype=torch.float64))
        z = z / z.norm(p=p, dim=1, keepdim=True)
        r = torch.rand(n, 1, generator=g, dtype=torch.float64) ** (1.0 / d)
        r[: n // 2] = 1.0
        u = z * r
    pts = x.reshape(1, -1).double() + eps * u
    return pts.clamp(0, 1) if clip else pts


def _gradients(model64, xs: torch.Tensor) -> torch.Tensor:
    xg = xs.clone().requires_grad_(True)
    y = model64(xg).reshape(len(xs), -1)
    return torch.stack([torch.autograd.grad(y[:, k].sum(), xg, retain_graph=True)[0]
                        .reshape(len(xs), -1) for k in range(y.shape[1])], 1)  # [N, K, n]


def check(name: str, model, x: torch.Tensor, seed: int) -> list[tuple]:
    """The violations and refusals of one case at one seed."""
    out: list[tuple] = []
    rnd, g = random.Random(seed), torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in model.parameters():
            prm.mul_(rnd.choice([0.5, 1.0, 2.0, 3.0]))
    eps, p = rnd.choice([0.01, 0.1, 0.3, 1.0]), rnd.choice([math.inf, 2, 1])
    clip = rnd.random() < 0.4
    dr = (0.0, 1.0) if clip else None
    xs = ball_points(x, eps, p, 1500, g, clip).reshape(-1, *x.shape)
    model64 = copy.deepcopy(model).double()
    dt = next(model.parameters()).dtype
    with torch.no_grad():
        ys = [model(xs.to(dt)).double().reshape(len(xs), -1), model64(xs).reshape(len(xs), -1)]
    J = _gradients(model64, xs)
    gn = J.norm(p=DUAL[p], dim=2)
    tag = f"{name} seed={seed} eps={eps} p={p} range={dr}"
    for meth in ("ibp", "crown", "alpha-crown"):
        try:
            r = lipbound.output_bounds(model, x, eps, norm=p, method=meth, data_range=dr)
        except lipbound.LipboundError as e:
            out.append((tag, f"out-{meth}", "refused", type(e).__name__))
            continue
        lo, up = r.lower.double().reshape(-1), r.upper.double().reshape(-1)
        worst = max(max(float((lo - y).max()), float((y - up).max())) for y in ys)
        if worst > 0:
            out.append((tag, f"out-{meth}", "VIOLATION", worst))
    for meth in ("naive", "ibp", "crown", "alpha-crown"):
        try:
            r = lipbound.local_lipschitz(model, x, eps, norm=p, method=meth, data_range=dr,
                                         progress=False)
        except lipbound.LipboundError as e:
            out.append((tag, f"lip-{meth}", "refused", type(e).__name__))
            continue
        up, lo = r.upper.double().reshape(-1), r.lower.double().reshape(-1)
        worst = float((gn - up * (1 + 1e-7) - 1e-9).max())
        if worst > 0 or (lo > up * (1 + 1e-9) + 1e-12).any():
            out.append((tag, f"lip-{meth}", "VIOLATION", worst))
    for meth in ("ibp", "crown"):
        try:
            r = lipbound.jacobian_bounds(model, x, eps, norm=p, method=meth, data_range=dr)
        except lipbound.LipboundError as e:
            out.append((tag, f"jac-{meth}", "refused", type(e).__name__))
            continue
        K = J.shape[1]
        lo, up = r.lower.double().reshape(1, K, -1), r.upper.double().reshape(1, K, -1)
        tol = 1e-7 * (1 + J.abs())
        worst = max(float((lo - J - tol).max()), float((J - up - tol).max()))
        if worst > 0:
            out.append((tag, f"jac-{meth}", "VIOLATION", worst))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs=2, default=(0, 4), metavar=("FIRST", "END"))
    ap.add_argument("cases", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name, (model, x) in cases.items():
        if args.cases and name not in args.cases:
            continue
        for seed in range(*args.seeds):
            try:
                found = check(name, copy.deepcopy(model), x, seed)
            except lipbound.LipboundError:
                found = []  # refused before any bound (the sweep reports why)
            except Exception as e:  # noqa: BLE001 - the harness cannot run the case
                found = [(name, f"seed={seed}", "harness", f"{type(e).__name__}: {e}"[:120])]
            for row in found:
                if row[2] not in ("refused", "harness") or seed == args.seeds[0]:
                    print(*row, flush=True)
        print("done", name, flush=True)


if __name__ == "__main__":
    main()
