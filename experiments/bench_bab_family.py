"""Branch and bound against the exact MILP on a seeded family of unseen random MLPs (issue 16).

The family: ``--problems`` ReLU / LeakyReLU(0.1) MLPs, seed i -> inputs 2..64, 1..3 hidden
layers of width 8..48, 2..5 outputs (every output a spec row), eps log-uniform in [0.01, 1],
half of them clipped to the data range [0, 1] (with x in [0, 1]), l_inf balls. Exact row
values come from ``method="exact"`` without a time limit (cached in ``--exact-cache``).

Per problem and budget T (``--budgets``, default 5 20 60 s):

- ``bab`` (objective "max"): the constant (largest row) certified within 0.5 % of exact by
  time T, read off the anytime trace of one run of max(T) seconds;
- ``bab`` (objective "rows"): rows certified within 0.5 % by a run of T seconds;
- ``exact``: the MILP run per row with an even share of T (its dual bound on timeout).

Prints one JSON line per problem and a summary table: shares within 0.5 % per budget and
method, and the median time to certify the constant.

    OMP_NUM_THREADS=1 python experiments/bench_bab_family.py --threads 1 [--problems 40]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch
from torch import nn

import lipbound

TOL = 0.005
OUT = Path(__file__).parent / "out"


def family_problem(seed: int) -> dict:
    """Problem ``seed`` of the family: model, centre, eps, data range and a description."""
    g = torch.Generator().manual_seed(1000 + seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    n_in = pick([2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64])
    depth = pick([1, 2, 3])
    widths = [pick([8, 12, 16, 24, 32, 48]) for _ in range(depth)]
    k = pick([2, 3, 4, 5])
    leaky = bool(torch.rand(1, generator=g) < 0.3)
    eps = float(10 ** (-2 + 2 * torch.rand(1, generator=g)))
    clip = bool(torch.rand(1, generator=g) < 0.5)
    sizes = [n_in, *widths, k]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        with torch.no_grad():
            lin.weight.copy_(torch.randn(sizes[i + 1], sizes[i], generator=g)
                             * math.sqrt(2.0 / sizes[i]))
            lin.bias.copy_(torch.randn(sizes[i + 1], generator=g) * 0.1)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.1) if leaky else nn.ReLU())
    model = nn.Sequential(*layers).double().eval()
    x = torch.rand(n_in, generator=g, dtype=torch.float64)
    name = f"p{seed}:{'-'.join(map(str, sizes))}{'L' if leaky else ''}:eps{eps:.3g}" \
           f"{':clip' if clip else ''}"
    return {"name": name, "model": model, "x": x, "eps": eps,
            "data_range": (0.0, 1.0) if clip else None, "rows": k}


def exact_rows(p: dict, timeout: float | None) -> tuple[list[float], list[float], list[str]]:
    """Per row: the MILP's certified upper bound, its solve time and status."""
    ups, times, status = [], [], []
    for s in range(p["rows"]):
        spec = torch.zeros(1, p["rows"], dtype=torch.float64)
        spec[0, s] = 1.0
        r = lipbound.local_lipschitz(p["model"], p["x"], p["eps"], spec=spec, method="exact",
                                     timeout=timeout, data_range=p["data_range"])
        ups.append(float(r.upper[0]))
        times.append(r.time)
        status.append(r.status)
    return ups, times, status


def exact_reference(p: dict, cache: dict) -> list[float]:
    """Exact row values (no time limit), cached by problem name."""
    if p["name"] not in cache:
        ups, times, status = exact_rows(p, None)
        cache[p["name"]] = {"values": ups, "times": times, "status": status}
    return cache[p["name"]]["values"]


def bab_max(p: dict, budgets: list[float], exact_max: float) -> dict:
    """The objective-"max" search: within tolerance at each budget, and when it got there."""
    r = lipbound.local_lipschitz(p["model"], p["x"], p["eps"], method="bab",
                                 timeout=max(budgets), data_range=p["data_range"],
                                 progress=False)
    trace = r.details["trace"]
    ok_at = {}
    for b in budgets:
        uppers = [u for (t, u, _, _) in trace if t <= b]
        best = min(uppers) if uppers else math.inf
        if r.time <= b:
            best = min(best, r.value)
        ok_at[b] = best <= exact_max * (1 + TOL)
    hits = [t for (t, u, _, _) in trace if u <= exact_max * (1 + TOL)]
    if r.value <= exact_max * (1 + TOL):
        hits.append(r.time)
    return {"ok": ok_at, "time_to_exact": min(hits) if hits else math.inf,
            "final": r.value, "status": r.status}


def bab_rows(p: dict, budget: float, exact: list[float]) -> int:
    r = lipbound.local_lipschitz(p["model"], p["x"], p["eps"], method="bab", timeout=budget,
                                 data_range=p["data_range"], objective="rows", progress=False)
    return sum(float(u) <= e * (1 + TOL) for u, e in zip(r.upper, exact))


def exact_budget(p: dict, budget: float, exact: list[float], ref: dict) -> tuple[bool, int]:
    """The MILP at budget T: (constant within tolerance, rows within tolerance)."""
    if sum(ref["times"]) <= budget:  # the untimed run finished inside the budget
        return True, len(exact)
    ups, _, _ = exact_rows(p, budget)
    ok_rows = sum(u <= e * (1 + TOL) for u, e in zip(ups, exact))
    return max(ups) <= max(exact) * (1 + TOL), ok_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--problems", type=int, default=40)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--budgets", type=float, nargs="+", default=[5.0, 20.0, 60.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-exact-budgets", action="store_true",
                    help="do not rerun the MILP at each budget")
    ap.add_argument("--exact-only", action="store_true",
                    help="only fill the cache of exact values (no time limit), then stop")
    ap.add_argument("--exact-cache", default=str(OUT / "bab_family_exact.json"))
    ap.add_argument("--out", default=str(OUT / "bench_bab_family.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache_path = Path(args.exact_cache)
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    rows = []
    for seed in range(args.first, args.first + args.problems):
        p = family_problem(seed)
        exact = exact_reference(p, cache)
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache, indent=1))
        if args.exact_only:
            print(p["name"], cache[p["name"]]["times"], flush=True)
            continue
        row = {"name": p["name"], "exact": exact, "exact_time": sum(cache[p["name"]]["times"])}
        row["bab_max"] = bab_max(p, args.budgets, max(exact))
        row["bab_rows"] = {b: bab_rows(p, b, exact) for b in args.budgets}
        if not args.skip_exact_budgets:
            row["exact_at"] = {b: exact_budget(p, b, exact, cache[p["name"]])
                               for b in args.budgets}
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
    if args.exact_only:
        return
    Path(args.out).write_text(json.dumps({"budgets": args.budgets, "rows": rows}, indent=1,
                                         default=str))
    summary(rows, args.budgets)


def summary(rows: list[dict], budgets: list[float]) -> None:
    n, n_rows = len(rows), sum(len(r["exact"]) for r in rows)
    print(f"\n{n} problems, {n_rows} rows; within {TOL:.1%} of exact")
    print("| budget | bab constant | bab rows | exact constant | exact rows |")
    print("|---|---|---|---|---|")
    for b in budgets:
        bc = sum(r["bab_max"]["ok"][b] for r in rows)
        br = sum(r["bab_rows"][b] for r in rows)
        cells = [f"{b:g} s", f"{bc}/{n} ({bc / n:.0%})", f"{br}/{n_rows} ({br / n_rows:.0%})"]
        if all("exact_at" in r for r in rows):
            ec = sum(r["exact_at"][b][0] for r in rows)
            er = sum(r["exact_at"][b][1] for r in rows)
            cells += [f"{ec}/{n} ({ec / n:.0%})", f"{er}/{n_rows} ({er / n_rows:.0%})"]
        else:
            cells += ["-", "-"]
        print("| " + " | ".join(cells) + " |")
    tb = [r["bab_max"]["time_to_exact"] for r in rows]
    te = [r["exact_time"] for r in rows]
    print(f"median time to certify the constant: bab {statistics.median(tb):.2f} s, "
          f"exact (all rows, no limit) {statistics.median(te):.2f} s")


if __name__ == "__main__":
    main()
