"""Two source trees' ``bench_bab.py`` alternated case by case in one run (same core, same
thread count), so a before / after comparison of method "bab" sees the same load.

Each run is ``python TREE/experiments/bench_bab.py --cases CASE --threads 1 [ARGS]`` with
``PYTHONPATH=TREE`` in a subprocess (the caller's taskset / nice are inherited). Prints one
line per run: tree, case, extra args, split, domains, final ratio upper / attained and the
ratio at 20 / 60 / 120 s read off the trace; writes every row (traces included) as JSON.

    taskset -c 0 nice -n 5 python experiments/bench_bab_ab.py --old /work/wt-old16 \\
        --new . --cases acasxu mnistfc [--timeout T] [--variants "--split input" ...]

``--variants``: extra bench_bab arguments run on the new tree only (after the A/B pairs), one
variant per token, options without their dashes, comma-separated: ``split=input,no-stage``
runs ``--split input --no-stage``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKPOINTS = (20.0, 60.0, 120.0)


def ratio_at(row: dict, t: float) -> float | None:
    """Upper / attained of the search's trace at ``t`` s (None past its end)."""
    trace = row["trace"]
    done = [p for p in trace if p[0] <= t]
    if not done or trace[-1][0] < 0.98 * t:
        return None
    return done[-1][1] / done[-1][2]


def variant_args(token: str) -> list[str]:
    """``split=input,no-stage`` -> ["--split", "input", "--no-stage"]."""
    out = []
    for item in token.split(","):
        key, _, value = item.partition("=")
        out += [f"--{key}"] + ([value] if value else [])
    return out


def run(tree: Path, case: str, extra: list[str], timeout: float | None) -> list[dict]:
    """The rows of one bench_bab run of ``tree``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "o.json"
        cmd = [sys.executable, str(tree / "experiments" / "bench_bab.py"), "--cases", case,
               "--threads", "1", "--out", str(out), *extra]
        if timeout:
            cmd += ["--timeout", str(timeout)]
        env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1",
                   OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        subprocess.run(cmd, env=env, check=True, cwd=tree, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())["rows"]


def summary(label: str, extra: list[str], row: dict) -> dict:
    """One printed line: the final ratio and the ratio at each checkpoint."""
    at = {int(t): ratio_at(row, t) for t in CHECKPOINTS}
    return {"tree": label, "case": row["case"], "args": " ".join(extra),
            "split": row.get("split"), "domains": row["domains"],
            "status": row["bab_status"], "ratio": round(row["ratio_upper_lower"], 4),
            **{f"r{t}": None if v is None else round(v, 4) for t, v in at.items()},
            "milp": (row.get("milp_stage") or {}).get("ran")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", default=".")
    ap.add_argument("--cases", nargs="+", default=["acasxu", "mnistfc"])
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--variants", nargs="*", default=[])
    ap.add_argument("--variants-only", action="store_true", help="skip the old / new pairs")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "bench_bab_ab.json"))
    args = ap.parse_args()
    old, new = Path(args.old).resolve(), Path(args.new).resolve()
    plan = [(lbl, tree, case, []) for case in args.cases
            for lbl, tree in (("old", old), ("new", new))] if not args.variants_only else []
    plan += [("new", new, case, variant_args(v)) for v in args.variants for case in args.cases]
    rows = []
    for lbl, tree, case, extra in plan:
        for row in run(tree, case, extra, args.timeout):
            s = summary(lbl, extra, row)
            print(json.dumps(s), flush=True)
            rows.append({**s, "trace": row["trace"]})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
