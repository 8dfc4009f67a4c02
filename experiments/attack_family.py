"""Do verify's vertex steps pay? verify's attacks with and without them on two families.

Each problem is a robustness region (an l_inf box around an input, clipped to the data range)
with the property "the label's output stays the largest" (one disjunct per other class, as
the VNN-COMP mnistfc properties). The two attack configurations of verify's stages 2-3 run on
it in turn, with the same seed: the joint attack (100 PGD steps, 16 restarts) then the
per-disjunct one (100 steps, 8 restarts), with ``lipbound.attack.VERTEX_STEPS`` = 0 (PGD only) and
the default (vertex steps first). A found point is a confirmed counterexample (re-run on the
model), so the counts of found points and the times are the comparison.

- ``mnistfc``: the three shared mnistfc networks, the images of the shared properties
  prop_0 ... prop_7 (read back from their 0.03 boxes), at eps 0.035, 0.045, 0.06 and 0.08
  (not the VNN-COMP radii).
- ``random``: seeded He-initialised ReLU MLPs (inputs 16-128, 2-4 hidden layers of width
  32-96, 10 outputs) around a standard normal input, eps log-uniform in [0.02, 0.5], label
  the argmax at the centre.

``--radius``: instead, the robustness audit's attack (:func:`lipbound.attack.margin_attack`,
l_inf, 8 restarts of 50 steps) on the same images and random nets, the smallest radius it
attacks found by 12 bisection steps below 0.2 (mnistfc, data range [0, 1]) or 1.0 (random),
with and without vertex steps: a smaller radius is a tighter empirical bound.

``--counterfactual``: instead, the counterfactual audit's attained output change
(:func:`lipbound.audit.counterfactual_stability`, l_inf, method "crown") at the centres of
the random problems, with and without vertex steps: a larger attained change is a tighter
lower bound beside the certified upper one.

    OMP_NUM_THREADS=1 taskset -c 0 python experiments/attack_family.py [--random 40]
        [--radius | --counterfactual]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import lipbound.attack as attack_module
from lipbound.audit._radius import bracket
from lipbound.io import load_onnx
from lipbound.io.vnnlib import Conjunction, InputRegion, read_vnnlib
from lipbound.verify.falsify import Checker, attack, targeted_attack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bab_family import he_mlp  # noqa: E402

MNIST = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "vnncomp2021" / "mnistfc"
EPS = (0.035, 0.045, 0.06, 0.08)
OUT = Path(__file__).parent / "out"


def label_region(lo: torch.Tensor, up: torch.Tensor, label: int, k: int) -> InputRegion:
    """Counterexamples: some class j != label has y_j >= y_label (y_label - y_j <= 0)."""
    disjuncts = []
    for j in range(k):
        if j != label:
            C = torch.zeros(1, k, dtype=torch.float64)
            C[0, label], C[0, j] = 1.0, -1.0
            disjuncts.append(Conjunction(C, torch.zeros(1, dtype=torch.float64)))
    return InputRegion(lo.double(), up.double(), tuple(disjuncts))


def mnistfc_problems():
    for net in ("256x2", "256x4", "256x6"):
        model = load_onnx(MNIST / f"mnist-net_{net}.onnx")
        for i in range(8):
            reg = read_vnnlib(MNIST / f"prop_{i}_0.03.vnnlib", 784, 10).regions[0]
            lo, up = reg.lower, reg.upper
            x = torch.where(lo == 0, up - 0.03, torch.where(up == 1, lo + 0.03, (lo + up) / 2))
            for eps in EPS:
                box = InputRegion((x - eps).clamp(0, 1), (x + eps).clamp(0, 1), reg.disjuncts)
                yield f"{net} img {i} eps {eps}", model, box, (784, 1)


def random_problems(count: int):
    for seed in range(count):
        g = torch.Generator().manual_seed(9100 + seed)
        n = [16, 32, 64, 128][int(torch.randint(4, (1,), generator=g))]
        depth = int(torch.randint(2, 5, (1,), generator=g))
        width = [32, 64, 96][int(torch.randint(3, (1,), generator=g))]
        model = he_mlp([n] + [width] * depth + [10], g, nn.ReLU).eval()
        x = torch.randn(n, generator=g)
        eps = 10 ** (math.log10(0.02) + math.log10(25) * float(torch.rand(1, generator=g)))
        with torch.no_grad():
            label = int(model(x[None]).argmax())
        yield f"random {seed} ({n}-{width}x{depth}, eps {eps:.3f})", model, \
            label_region(x - eps, x + eps, label, 10), (n,)


def run(model: nn.Module, region: InputRegion, shape, vertex_steps: int) -> tuple[bool, float]:
    attack_module.VERTEX_STEPS = vertex_steps
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    found = attack(model, region, shape, Checker(model, shape), steps=100, restarts=16,
                   generator=g)
    if found is None:
        found = targeted_attack(model, region, shape, Checker(model, shape), steps=100,
                                restarts=8, generator=g)
    return found is not None, time.perf_counter() - t0


def attacked_radius(model: nn.Module, x: torch.Tensor, hi: float, vertex_steps: int,
                    data_range) -> float:
    """The smallest radius (12 bisection steps in (0, hi]) where margin_attack finds a point."""
    attack_module.VERTEX_STEPS = vertex_steps
    with torch.no_grad():
        label = int(model(x[None]).reshape(-1).argmax())

    def found(r: float) -> bool:
        g = torch.Generator().manual_seed(0)
        return attack_module.margin_attack(model, x, label, r, data_range=data_range,
                                           generator=g) is not None

    return bracket(lambda r: not found(r), hi, 12)[1]


def radius_problems(count: int):
    """(label, model with a batch-first input, input, largest radius, data range)."""
    for net in ("256x2", "256x4", "256x6"):
        onnx = load_onnx(MNIST / f"mnist-net_{net}.onnx")
        model = nn.Sequential(nn.Unflatten(1, (784, 1)), onnx, nn.Flatten())
        for i in range(8):
            reg = read_vnnlib(MNIST / f"prop_{i}_0.03.vnnlib", 784, 10).regions[0]
            lo, up = reg.lower, reg.upper
            x = torch.where(lo == 0, up - 0.03, torch.where(up == 1, lo + 0.03, (lo + up) / 2))
            yield f"{net} img {i}", model, x.float(), 0.2, (0.0, 1.0)
    for label, model, region, _ in random_problems(count):
        x = (region.lower + region.upper) / 2
        yield label.split(" (")[0], model, x.float(), 1.0, None


def radius_main(count: int) -> list[dict]:
    default = attack_module.VERTEX_STEPS
    ratios, smaller, larger, records = [], 0, 0, []
    for label, model, x, hi, dr in radius_problems(count):
        old = attacked_radius(model, x, hi, 0, dr)
        new = attacked_radius(model, x, hi, default, dr)
        print(f"{label}: PGD only {old:.5f}, vertex + PGD {new:.5f}", flush=True)
        records.append({"problem": label, "pgd_only": old, "vertex_pgd": new})
        if math.isfinite(old) and math.isfinite(new):
            ratios.append(new / old)
        smaller += new < old
        larger += new > old
    attack_module.VERTEX_STEPS = default
    print(f"\n{len(ratios)} radii both attacked: median ratio (vertex + PGD / PGD only) "
          f"{statistics.median(ratios):.3f}, smaller {smaller}, larger {larger}")
    return records


def counterfactual_main(count: int) -> list[dict]:
    from lipbound.audit import counterfactual_stability

    default = attack_module.VERTEX_STEPS
    ratios, gaps_old, gaps_new, larger, smaller, records = [], [], [], 0, 0, []
    for label, model, region, _ in random_problems(count):
        x = (region.lower + region.upper) / 2
        eps = float((region.upper - region.lower).max()) / 2
        lows = []
        for steps in (0, default):
            attack_module.VERTEX_STEPS = steps
            r = counterfactual_stability(model.double(), x, eps)
            lows.append(r.lower_change)
        up = r.upper_change
        for lo_old, lo_new, u in zip(lows[0].tolist(), lows[1].tolist(), up.tolist()):
            ratios.append(lo_new / max(lo_old, 1e-300))
            gaps_old.append(u / max(lo_old, 1e-300))
            gaps_new.append(u / max(lo_new, 1e-300))
            larger += lo_new > lo_old
            smaller += lo_new < lo_old
        records.append({"problem": label, "pgd_only": lows[0].tolist(),
                        "vertex_pgd": lows[1].tolist(), "certified": up.tolist()})
        print(f"{label}: attained change PGD only {lows[0].max():.4g}, vertex + PGD "
              f"{lows[1].max():.4g}, certified {up.max():.4g}", flush=True)
    attack_module.VERTEX_STEPS = default
    print(f"\n{len(ratios)} rows: attained change larger with vertex steps in {larger}, "
          f"smaller in {smaller}; median ratio {statistics.median(ratios):.3f}; median "
          f"certified / attained {statistics.median(gaps_old):.3f} -> "
          f"{statistics.median(gaps_new):.3f}")
    return records


def _median(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f}x" if xs else "-"


def summary(name: str, rows: list[tuple[bool, float, bool, float]]) -> str:
    both = [tv / tp for fp, tp, fv, tv in rows if fp and fv]
    none = [tv / tp for fp, tp, fv, tv in rows if not fp and not fv]
    return (f"| {name} | {len(rows)} | {sum(r[0] for r in rows)} | {sum(r[2] for r in rows)} "
            f"| {sum(r[0] and not r[2] for r in rows)} | {sum(r[2] and not r[0] for r in rows)} "
            f"| {_median(both)} | {_median(none)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=int, default=40, help="random problems (0: none)")
    ap.add_argument("--no-mnistfc", action="store_true")
    ap.add_argument("--radius", action="store_true", help="the audit's margin attack instead")
    ap.add_argument("--counterfactual", action="store_true",
                    help="the counterfactual audit's attained change instead")
    ap.add_argument("--out", default=None, help="JSON out (default: experiments/out/...)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.radius or args.counterfactual:
        records = (radius_main if args.radius else counterfactual_main)(args.random)
        write(args.out or OUT / f"attack_family_{'radius' if args.radius else 'cf'}.json",
              records)
        return
    default = attack_module.VERTEX_STEPS
    fams = [] if args.no_mnistfc else [("mnistfc", mnistfc_problems())]
    fams.append(("random", random_problems(args.random)))
    lines, records = [], []
    for fam, problems in fams:
        rows = []
        for label, model, region, shape in problems:
            fp, tp = run(model, region, shape, 0)
            fv, tv = run(model, region, shape, default)
            rows.append((fp, tp, fv, tv))
            records.append({"family": fam, "problem": label, "pgd_only": fp, "pgd_time": tp,
                            "vertex_pgd": fv, "vertex_time": tv})
            print(f"{label}: pgd {fp} {tp:.2f} s, vertex {fv} {tv:.2f} s", flush=True)
        lines.append(summary(fam, rows))
    attack_module.VERTEX_STEPS = default
    write(args.out or OUT / "attack_family.json", records)
    print("\n| family | problems | found, PGD only | found, vertex + PGD | only PGD | only vertex "
          "| time ratio, both found (median) | time ratio, none found (median) |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))


def write(path, records: list[dict]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
