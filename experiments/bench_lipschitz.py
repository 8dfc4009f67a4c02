"""Local Lipschitz bounds on every row of the shared anchor table.

For each case: upper bounds per method (max over the output rows, l_inf input norm), the
median wall time of 5 calls (the first call also traces the model; reported separately), the
attained lower bound (gradient norms at 4000 sampled points plus vertices and ascent) and the
ratios to the anchors. Writes JSON (default experiments/out/bench_lipschitz.json).

    python experiments/bench_lipschitz.py [--methods crown alpha-crown] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import lipschitz_cases, median_time  # noqa: E402

import lipbound  # noqa: E402


def run(methods: list[str], repeats: int) -> list[dict]:
    rows = []
    for case in lipschitz_cases():
        row = {"case": case.name, "eps": case.eps, "anchor": case.anchor}
        lower = lipbound.local_lipschitz(case.model, case.x0, case.eps, method="ibp",
                                         data_range=case.data_range, n_samples=4000)
        row["sampled_lower"] = float(lower.lower.max())
        for method in methods:
            med, first, r = median_time(lambda m=method, c=case: lipbound.local_lipschitz(
                c.model, c.x0, c.eps, method=m, data_range=c.data_range, n_samples=1), repeats)
            entry = {"upper": r.value, "time_median": med, "time_first_call": first,
                     "upper_over_sampled": r.value / max(row["sampled_lower"], 1e-300)}
            ref = case.anchor.get("auto_lirpa")
            if isinstance(ref, float):
                entry["upper_over_auto_lirpa"] = r.value / ref
                entry["time_over_auto_lirpa"] = med / case.anchor["time"]
            row[method] = entry
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--methods", nargs="+", default=["naive", "ibp", "crown", "alpha-crown"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "bench_lipschitz.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = run(args.methods, args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"threads": args.threads, "torch": torch.__version__,
                                          "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
