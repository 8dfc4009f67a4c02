"""What the ``verify_*_choice.py`` development families share: running a range of seeds with
one JSON line per problem, and the table of verdicts per variant."""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path

import torch


def family_args(ap: argparse.ArgumentParser, name: str, seeds: str, timeout: float
                ) -> argparse.Namespace:
    """``ap``'s arguments plus the ones every family script takes (``--seeds A:B``,
    ``--timeout``, ``--threads``, ``--out``, default ``out/<name>.jsonl``), parsed, with
    torch's thread count set."""
    ap.add_argument("--seeds", default=seeds)
    ap.add_argument("--timeout", type=float, default=timeout)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / f"{name}.jsonl"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    return args


def run_family(seeds: str, out: str, one: Callable[[int], dict]) -> list[dict]:
    """``one(seed)`` for the seeds "a:b", each record appended to ``out`` as a JSON line (and
    printed) as soon as it exists."""
    a, b = (int(v) for v in seeds.split(":"))
    recs = []
    for seed in range(a, b):
        rec = one(seed)
        recs.append(rec)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)
    return recs


def verdict_table(recs: list[dict], variants: list[str], label: str, stage: str) -> None:
    """Per variant (the key of its verdict in each record: ``verdict``, ``time``, ``by``):
    properties decided, sat, unsat, decided by ``stage``, median time of the decided ones."""
    print(f"\n{len(recs)} properties")
    print(f"| {label} | decided | sat | unsat | by {stage} | median s (decided) |")
    print("|---|---|---|---|---|---|")
    for key in variants:
        rs = [r[key] for r in recs]
        dec = [r for r in rs if r["verdict"] in ("sat", "unsat")]
        med = statistics.median(r["time"] for r in dec) if dec else math.nan
        print(f"| {key} | {len(dec)} | {sum(r['verdict'] == 'sat' for r in dec)} | "
              f"{sum(r['verdict'] == 'unsat' for r in dec)} | "
              f"{sum(r['by'] == stage for r in dec)} | {med:.1f} |")
