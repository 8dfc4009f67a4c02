"""The four shared convolutional nets of issue 19, before and after the issue-19 work.

``python experiments/scaling.py --parts shared`` runs, case by case and alternating the two
code trees, one fresh process per (case, tree): ``local_lipschitz(method="crown")`` on
cnn_4layer (eps 2e-3), oval21 cifar_base_kw, the verivital max-pool net and resnet_2b (the
cases of ``bench_cnn_speed.py``), with the first call (it includes the trace and the one-time
imports) timed apart from the ``repeats`` later calls. "before" is the tree at ``--before``
(default ``/work/wt-before``, a ``git worktree`` of commit 9099d05, the main branch just
before the issue-19 speed work was merged in 6a42e04), "after" this tree. Each process runs
single-threaded; the upper bounds of both trees are compared.

This file is also the worker: ``python experiments/scaling_shared.py CASE REPEATS`` prints
one JSON line for the lipbound on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CASES = ("cnn_4layer eps 2e-3", "oval21", "verivital", "resnet_2b")


def worker(case: str, repeats: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    import lipbound

    sys.path.insert(0, str(HERE))
    from bench_cnn_speed import cases, timed

    t_import = time.perf_counter() - t0
    name, model, x0, eps, dr = next(c for c in cases(True) if case in c[0])

    def call():
        return lipbound.local_lipschitz(model, x0, eps, method="crown", data_range=dr).upper

    t = timed(call, repeats)
    up = t["out"]
    return {"case": name, "lipbound": str(Path(lipbound.__file__).parent.parent),
            "import_s": t_import, "first_s": t["first"], "times_s": t["times"],
            "median_s": t["median"], "first_minus_median_s": t["first"] - t["median"],
            "upper": up.tolist(), "value": float(up.max())}


def run_one(tree: Path, case: str, repeats: int, timeout: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(HERE / "scaling_shared.py"), case, str(repeats)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"case": case, "error": proc.stderr.strip().splitlines()[-1:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load_average"] = os.getloadavg()[0]
    return out


def run_shared(before: Path, repeats: int, quick: bool, timeout: float = 1800
               ) -> list[dict[str, Any]]:
    """Rows {case, before, after, speed-up, first-call extras, largest relative change}."""
    after = HERE.parent
    rows = []
    for k, case in enumerate(CASES[:3] if quick else CASES):
        order = [("before", before), ("after", after)]
        res = dict((tag, run_one(tree, case, repeats, timeout))
                   for tag, tree in (order if k % 2 == 0 else order[::-1]))
        row: dict[str, Any] = {"case": res["after"].get("case", case), **res}
        if "median_s" in res["before"] and "median_s" in res["after"]:
            b, a = res["before"], res["after"]
            row["speedup"] = b["median_s"] / a["median_s"]
            row["max_rel_change"] = max((u - v) / max(abs(v), 1e-300)
                                        for u, v in zip(a["upper"], b["upper"]))
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("before", "after")}
                         | {t: {k2: res[t].get(k2) for k2 in ("median_s", "first_s", "value",
                                                              "error")} for t in res}),
              flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`run_shared`'s rows."""
    lines = ["| net | before (s) | after (s) | speed-up | first-call extra before / after (s) "
             "| upper before / after | largest rel. change |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        b, a = r["before"], r["after"]
        if "median_s" not in b or "median_s" not in a:
            lines.append(f"| {r['case']} | {b.get('error')} | {a.get('error')} | | | | |")
            continue
        lines.append(f"| {r['case']} | {b['median_s']:.2f} | {a['median_s']:.2f} | "
                     f"{r['speedup']:.1f}x | {b['first_minus_median_s']:.2f} / "
                     f"{a['first_minus_median_s']:.2f} | {b['value']:.6g} / {a['value']:.6g} | "
                     f"{r['max_rel_change']:+.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(worker(sys.argv[1], int(sys.argv[2]))))
