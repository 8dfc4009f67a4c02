"""Benchmark of the audits on shipped models: monotonicity and robustness.

1. Monotonicity: ``lipbound.audit.monotonicity`` on ``diabetes-mlp`` over its training box
   (per-feature min/max of the standardised training split), every feature, with the Jacobian
   bounds of each ``--mono-methods`` entry: verdict, certified derivative range, domains and
   time per feature. The model is increasing in bmi, bp and s5 and V-shaped in age by
   construction; the other features are unconstrained. For contrast, the same audit of every
   feature of a net trained to be increasing in bmi, bp and s5 by a penalty (session 2's
   recipe, retrained here in a few seconds) rather than built so (``--penalty-timeout``
   seconds per feature; ``--penalty-only`` runs just this part).
2. Robustness: ``lipbound.audit.robustness`` on the first ``--points`` test digits with
   ``--model`` (l_inf, inputs clipped to [0, 1], radii up to ``--eps-max``): the certified
   radius of each method ("bounds": CROWN bisection then BaB; "lipschitz": local-Lipschitz
   margins), the PGD attack radius, the certified accuracy vs radius curves, the attacked
   ("empirical robust") accuracy and the gap between the two, and the time per method.

Writes JSON (``--out``), a plot (``--plot``: certified accuracy vs radius beside the
monotonicity ranges) and Markdown tables on stdout.

    python experiments/bench_audits.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import lipbound
from lipbound import audit
from lipbound.jsonutil import jsonable
from lipbound.models.diabetes import FEATURES, diabetes_box
from lipbound.models.digits import digits_data

OUT = Path(__file__).parent / "out"


def monotonicity_table(methods: list[str], timeout: float) -> list[dict]:
    model = lipbound.models.load("diabetes-mlp")
    lo, hi = diabetes_box()
    rows = []
    for method in methods:
        rep = audit.monotonicity(model, lo, hi, timeout=timeout, method=method, progress=False)
        for v in rep.features:
            rows.append({"method": method, "feature": v.feature, "name": FEATURES[v.feature],
                         "verdict": v.verdict, "derivative_lower": v.derivative_lower,
                         "derivative_upper": v.derivative_upper,
                         "witness_derivative": v.witness_derivative,
                         "support_derivative": v.support_derivative, "domains": v.domains,
                         "time": v.time})
        print(f"# monotonicity ({method}): {rep.time:.2f} s for {len(rep.features)} features",
              flush=True)
    return rows


def penalty_trained() -> torch.nn.Module:
    """A 10-16-16-1 ReLU MLP trained as session 2's diabetes-mlp was: MSE plus a penalty on
    partial derivatives below 0.05 in bmi, bp and s5 at 256 random box points per step (so
    increasing by training, not by construction), seed 0, Adam (3e-3, weight decay 1e-2),
    100 full-batch steps."""
    from lipbound.models.diabetes import MONOTONE_FEATURES, diabetes_data

    torch.manual_seed(0)
    Xtr, ytr = diabetes_data()[:2]
    lo, hi = diabetes_box()
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-2)
    for _ in range(100):
        opt.zero_grad()
        z = (lo + torch.rand(256, 10) * (hi - lo)).requires_grad_(True)
        (g,) = torch.autograd.grad(model(z).sum(), z, create_graph=True)
        penalty = (30 * torch.relu(0.05 - g[:, list(MONOTONE_FEATURES)]).mean()
                   + 0.1 * (g ** 2).mean())
        (((model(Xtr)[:, 0] - ytr) ** 2).mean() + penalty).backward()
        opt.step()
    return model.eval()


def penalty_table(timeout: float) -> list[dict]:
    """The audit of every feature of :func:`penalty_trained` (crown): the search, then the
    MILP stage on the hypotheses it leaves open (recorded per feature under "milp")."""
    model = penalty_trained()
    lo, hi = diabetes_box()
    rep = audit.monotonicity(model, lo, hi, timeout=timeout, max_domains=10**7, progress=False)
    print(f"# monotonicity (penalty-trained): {rep.time:.2f} s", flush=True)
    return [{"method": "crown (penalty-trained net)", "feature": v.feature,
             "name": FEATURES[v.feature], "verdict": v.verdict,
             "derivative_lower": v.derivative_lower, "derivative_upper": v.derivative_upper,
             "witness_derivative": v.witness_derivative,
             "support_derivative": v.support_derivative, "domains": v.domains, "time": v.time,
             "milp": list(v.stages)}
            for v in rep.features]


def print_penalty(rows: list[dict]) -> None:
    print("\n| feature | verdict | d lower | d upper | witness slope | domains | MILP (s) | "
          "time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        milp = " + ".join(f"{m['seconds']:.1f} ({m['status']})" for m in r["milp"]) or "–"
        w = r["witness_derivative"]
        print(f"| {r['name']} | {r['verdict']} | {r['derivative_lower']:.4g} | "
              f"{r['derivative_upper']:.4g} | {'–' if w is None else f'{w:.4g}'} | "
              f"{r['domains']} | {milp} | {r['time']:.1f} |")


def robustness_run(name: str, points: int, eps_max: float, grid: list[float]) -> dict:
    model = lipbound.models.load(name)
    X, y = digits_data()[2:]
    if name == "digits-cnn":
        X = X.view(-1, 1, 8, 8)
    X, y = X[:points], y[:points]
    lipbound.output_bounds(model, X[0], 0.01)  # warm up tracing before timing
    rep = audit.robustness(model, X, y, eps_max=eps_max, data_range=(0.0, 1.0),
                           methods=("bounds", "lipschitz"), radii=grid, progress=True)
    curves = rep.curves(grid)
    gap = {m: [a - c for a, c in zip(curves["attack"], curves[m])] for m in rep.methods}
    correct = [r for r in rep.records if r.correct]
    per_point = []
    for r in correct:
        attack = eps_max if r.attack_radius is None else r.attack_radius
        per_point.append({m: attack - r.radii[m] for m in rep.methods})
    return {"model": name, "points": len(rep.records), "correct": len(correct),
            "eps_max": eps_max, "radii": grid, "curves": curves, "accuracy_gap": gap,
            "median_radius": {m: statistics.median(r.radii[m] for r in correct)
                              for m in rep.methods} if correct else {},
            "median_radius_gap": {m: statistics.median(p[m] for p in per_point)
                                  for m in rep.methods} if per_point else {},
            "mean_time": {k: statistics.fmean(r.times.get(k, 0.0) for r in rep.records)
                          for k in (*rep.methods, "attack")},
            "bab_used": sum(r.details.get("bounds_method") == "bab" for r in rep.records),
            "time": rep.time, "records": [r.to_dict() for r in rep.records]}


def plot(mono: list[dict], rob: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(1, 2)
    for method, acc in rob["curves"].items():
        style = {"linestyle": "--", "color": "black"} if method == "attack" else {}
        label = "attack (PGD, not broken)" if method == "attack" else f"certified: {method}"
        ax.step(rob["radii"], acc, where="post", label=label, **style)
    ax.set_xlabel("l_inf radius")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{rob['model']}, {rob['points']} test digits")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    rows = [r for r in mono if r["method"] == mono[0]["method"]]
    colour = {"increasing": "#2a9d8f", "decreasing": "#457b9d", "not monotone": "#e63946",
              "unknown": "#adb5bd"}
    for i, r in enumerate(rows):
        bx.barh(i, r["derivative_upper"] - r["derivative_lower"], left=r["derivative_lower"],
                color=colour[r["verdict"]])
        bx.text(r["derivative_upper"], i, f" {r['verdict']}", va="center", fontsize=8)
    bx.axvline(0, color="black", linewidth=0.8)
    bx.set_yticks(range(len(rows)), [r["name"] for r in rows])
    bx.invert_yaxis()
    bx.set_xlabel("d output / d feature: certified range over the box")
    bx.set_title(f"diabetes-mlp monotonicity ({rows[0]['method']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_tables(mono: list[dict], rob: dict) -> None:
    print("\n| method | feature | verdict | d lower | d upper | domains | time (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in mono:
        print(f"| {r['method']} | {r['feature']} {r['name']} | {r['verdict']} | "
              f"{r['derivative_lower']:.4g} | {r['derivative_upper']:.4g} | {r['domains']} | "
              f"{r['time']:.3f} |")
    print(f"\n{rob['model']}: {rob['points']} points ({rob['correct']} correct), "
          f"{rob['time']:.1f} s; mean s/point: "
          + ", ".join(f"{k} {v:.2f}" for k, v in rob["mean_time"].items())
          + f"; BaB finished the bounds radius on {rob['bab_used']} points")
    print("\n| radius | " + " | ".join(rob["curves"]) + " |")
    print("|---|" + "---|" * len(rob["curves"]))
    for i, rho in enumerate(rob["radii"]):
        print(f"| {rho:g} | " + " | ".join(f"{acc[i]:.3f}" for acc in rob["curves"].values())
              + " |")
    print("\nmedian certified radius (correct points): "
          + ", ".join(f"{m} {v:.4f}" for m, v in rob["median_radius"].items())
          + "; median attack - certified radius: "
          + ", ".join(f"{m} {v:.4f}" for m, v in rob["median_radius_gap"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="digits-mlp", choices=["digits-mlp", "digits-cnn"])
    ap.add_argument("--points", type=int, default=24)
    ap.add_argument("--eps-max", type=float, default=0.1)
    ap.add_argument("--mono-methods", nargs="+", default=["crown", "ibp"])
    ap.add_argument("--mono-timeout", type=float, default=30.0, help="seconds per feature")
    ap.add_argument("--penalty-timeout", type=float, default=40.0,
                    help="seconds per feature on the penalty-trained net")
    ap.add_argument("--penalty-only", action="store_true",
                    help="only the audit of the penalty-trained net (table on stdout, JSON)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(OUT / "bench_audits.json"))
    ap.add_argument("--plot", default=str(OUT / "bench_audits.png"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.penalty_only:
        rows = penalty_table(args.penalty_timeout)
        Path(args.out).write_text(json.dumps(jsonable(
            {"threads": args.threads, "torch": torch.__version__, "machine": platform.node(),
             "penalty": rows, "wall_time": time.perf_counter() - start}), indent=1))
        print_penalty(rows)
        return
    mono = monotonicity_table(args.mono_methods, args.mono_timeout)
    pen = penalty_table(args.penalty_timeout)
    mono += pen
    grid = [round(args.eps_max * k / 20, 10) for k in range(21)]
    rob = robustness_run(args.model, args.points, args.eps_max, grid)
    doc = {"threads": args.threads, "torch": torch.__version__, "machine": platform.node(),
           "monotonicity": mono, "robustness": rob,
           "wall_time": time.perf_counter() - start}
    Path(args.out).write_text(json.dumps(jsonable(doc), indent=1))
    plot(mono, rob, Path(args.plot))
    print_tables(mono, rob)
    print_penalty(pen)
    print(f"\nwrote {args.out} and {args.plot} ({doc['wall_time']:.0f} s)")


if __name__ == "__main__":
    main()
