"""Compare two ``bench_vnncomp.py --part lipschitz --methods crown`` runs box by box.

    python experiments/compare_vnncomp_lipschitz.py AFTER.log BEFORE.log

Each file holds the JSON lines the bench prints (one per box). Prints, per benchmark, the
largest and median ratio of the crown upper bounds (after / before), how many boxes got looser
by more than 1e-12 (relative), and the median seconds of each run.
"""
from __future__ import annotations

import json
import statistics as st
import sys


def load(path: str) -> dict[tuple[str, str], dict]:
    """Box (onnx, vnnlib) -> the crown entry of each JSON line of a bench log."""
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                if r.get("crown"):
                    rows[(r["onnx"], r["vnnlib"])] = r["crown"]
    return rows


def main() -> None:
    after, before = load(sys.argv[1]), load(sys.argv[2])
    keys = sorted(set(after) & set(before))
    by: dict[str, list[tuple[float, float, float]]] = {}
    for k in keys:
        ua, ub = after[k].get("upper"), before[k].get("upper")
        if ua is None or ub is None:
            print("missing", k, after[k].get("status"), before[k].get("status"))
            continue
        by.setdefault(k[0].split("/")[0], []).append((ua / ub, after[k]["time"],
                                                      before[k]["time"]))
    print("| benchmark | boxes | upper after/before: max | median | looser (>1+1e-12) "
          "| median s before | median s after |")
    for net, rows in by.items():
        r = [x[0] for x in rows]
        looser = sum(x > 1 + 1e-12 for x in r)
        print(f"| {net} | {len(rows)} | {max(r):.6g} | {st.median(r):.6g} | {looser} "
              f"| {st.median(x[2] for x in rows):.2f} | {st.median(x[1] for x in rows):.2f} |")
    print(len(keys), "common boxes;", len(after), "after;", len(before), "before")


if __name__ == "__main__":
    main()
