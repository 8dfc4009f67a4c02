"""How many alpha/beta-CROWN steps (and in which dtype) sign domains spend on their forward
bounds in the output search (``lipbound.bab.outputs``): a development family of proof goals.

Seed i -> the random ReLU MLP and robustness property of ``verify_milp_choice.problem(i)``
(inputs 16-100, 2-3 hidden layers of width 32-128, 10 outputs), with the radius moved to
where plain CROWN no longer proves it: r_c, the largest radius CROWN proves (bisection, 14
steps), times a factor log-uniform in [1.05, 1.6] (seeded). Each property is one
``lipbound.prove_outputs`` call with relu splits and ``--timeout`` seconds per variant, the
variants alternating inside each problem. Every variant is sound, so the comparison is the
count proved, the time where all proved (geometric mean ratio against the first variant)
and, where none proved, the final margin min_j (lower_j - d_j) (larger is closer to a proof).

    OMP_NUM_THREADS=1 taskset -c 0 python experiments/bab_forward_choice.py --seeds 0:40 \
        --variants before after --timeout 20
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

import lipbound.bab.outputs as bo
from lipbound.api import output_bounds, prove_outputs
from lipbound.io.vnnlib import InputRegion, stack_conjunctions
from lipbound.verify.prove import box_as_ball

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verify_family import family_args, run_family  # noqa: E402
from verify_milp_choice import problem  # noqa: E402

#: variant -> settings of lipbound.bab.outputs (child forward steps, iterate dtype, spec steps,
#: sign domains per step)
VARIANTS = {
    "before": (20, None, 20, 32),  # the settings before session 12
    "after": (5, torch.float32, 20, 32),  # the chosen ones
    "3-f32": (3, torch.float32, 20, 32),
    "10-f32": (10, torch.float32, 20, 32),
    "5-f64": (5, None, 20, 32),
    "after-out10": (5, torch.float32, 10, 32),
    "after-out5": (5, torch.float32, 5, 32),
    "after-b16": (5, torch.float32, 20, 16),
    "after-b64": (5, torch.float32, 20, 64),
}


def crown_radius(model, x: torch.Tensor, C: torch.Tensor, d: torch.Tensor) -> float:
    """The largest radius (to 2^-14 of 0.5) at which CROWN bounds prove every row C_j f > d_j
    on the l_inf ball around x clipped to [0, 1]."""
    box = (torch.zeros_like(x)[None], torch.ones_like(x)[None])

    def proves(eps: float) -> bool:
        lo, _ = output_bounds(model, x[None], eps, spec=C, method="crown", data_range=box)
        return bool((lo.reshape(-1) > d).all())

    a, b = 0.0, 0.5
    for _ in range(14):
        m = (a + b) / 2
        a, b = (m, b) if proves(m) else (a, m)
    return a


def hard_problem(seed: int):
    """(name, model, region): the seed's property at r_c times a factor in [1.05, 1.6]."""
    model, prop, name = problem(seed, (0.005, 0.05))
    model = model.double()
    reg = prop.regions[0]
    x = (reg.lower + reg.upper) / 2
    C, d, _ = stack_conjunctions(reg.disjuncts)
    rc = crown_radius(model, x, C, d)
    g = torch.Generator().manual_seed(777 + seed)
    u = math.exp(math.log(1.05) + math.log(1.6 / 1.05) * float(torch.rand(1, generator=g)))
    eps = rc * u
    region = InputRegion((x - eps).clamp(0, 1), (x + eps).clamp(0, 1), reg.disjuncts)
    return f"{name.split(':eps')[0]}:rc{rc:.4g}x{u:.2f}", model, region


def run(seed: int, variants: list[str], timeout: float) -> dict:
    name, model, region = hard_problem(seed)
    C, d, owner = stack_conjunctions(region.disjuncts)
    x0, eps, box = box_as_ball(region, (region.lower.numel(),))
    rec: dict = {"name": name}
    saved = (bo.CHILD_FORWARD_ITERATIONS, bo.ITERATE_DTYPE, bo.OUTPUT_ITERATIONS,
             bo.BATCH["relu"])
    try:
        for v in variants:
            (bo.CHILD_FORWARD_ITERATIONS, bo.ITERATE_DTYPE, bo.OUTPUT_ITERATIONS,
             bo.BATCH["relu"]) = VARIANTS[v]
            t0 = time.perf_counter()
            res = prove_outputs(model, x0, eps, C, d, owner, data_range=box, timeout=timeout,
                                split="relu", progress=False)
            margin = float((res.lower.reshape(-1).cpu().double() - d.double()).min())
            rec[v] = {"proven": bool(res.proven.all()), "time": time.perf_counter() - t0,
                      "status": res.status, "margin": margin}
    finally:
        (bo.CHILD_FORWARD_ITERATIONS, bo.ITERATE_DTYPE, bo.OUTPUT_ITERATIONS,
         bo.BATCH["relu"]) = saved
    return rec


def summary(recs: list[dict], variants: list[str]) -> None:
    both = [r for r in recs if all(r[v]["proven"] for v in variants)]
    none = [r for r in recs if not any(r[v]["proven"] for v in variants)
            and r[variants[0]]["status"] == "timeout"]
    base = variants[0]
    print(f"\n{len(recs)} properties; {len(both)} proved by every variant, {len(none)} by none")
    print(f"| variant | proved | time / {base}, geometric mean where all proved | "
          f"median s there | larger margin than {base} where none proved |")
    print("|---|---|---|---|---|")
    for v in variants:
        gm = (math.exp(statistics.mean(math.log(r[v]["time"] / r[base]["time"]) for r in both))
              if both else math.nan)
        med = statistics.median(r[v]["time"] for r in both) if both else math.nan
        better = sum(r[v]["margin"] > r[base]["margin"] for r in none)
        print(f"| {v} | {sum(r[v]['proven'] for r in recs)} | {gm:.2f} | {med:.2f} | "
              f"{better}/{len(none)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="+", default=["before", "after"],
                    choices=sorted(VARIANTS))
    args = family_args(ap, "bab_forward_choice", "0:40", 20.0)
    recs = run_family(args.seeds, args.out, lambda s: run(s, args.variants, args.timeout))
    summary(recs, args.variants)


if __name__ == "__main__":
    main()
