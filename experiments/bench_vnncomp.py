"""Verification verdicts and local Lipschitz bounds on the shared VNN-COMP 2021 networks.

Instances: the rows of each benchmark's instances CSV whose network and property are shared
(file names looked up in the benchmark folder when the CSV's sub-folder differs); for folders
without a CSV (test, verivital, oval21, cifar10_resnet) every shared property with the shared
network(s) it names, timeout = the cap. To keep the run feasible on a shared 2-core machine:

- every verification gets ``min(CSV timeout, --cap)`` seconds (default cap 20 s; the CSV
  timeouts are 116 s for ACAS Xu, 120 s for mnistfc, 300 s for eran), plus untimed preparation
  (loading, tracing), reported separately;
- mnistfc uses properties 0 .. --mnistfc-props - 1 (default 4, both radii) on each network;
- local Lipschitz bounds are computed at the first --lip-props properties (default 2) of each
  network, each call interrupted after --lip-cap seconds (default 120).

Lipschitz: l_inf input norm, all output rows, the value ``max_j sup ||grad f_j||_1`` over the
property's box, written as centre and radius by ``center_radius_linf`` (clipped to [0, 1] when
the box is a clipped ball in [0, 1]; else the box itself as a ball clipped to the box). Methods
crown and bab (bab recorded as unavailable when this lipbound does not have it); ``lower`` is
the sampled lower bound ``result.lower`` (256 samples + ascent).

    python experiments/bench_vnncomp.py [--cap 20] [--out experiments/out/bench_vnncomp.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

import lipbound
from lipbound.errors import InputError, LipboundError, UnknownMethodError
from lipbound.inputs import resolve_model
from lipbound.io import center_radius_linf, read_vnnlib
from lipbound.verify import verify
from lipbound.verify.deadline import Deadline, Expired, interrupt_at

BENCH = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "vnncomp2021"
NO_CSV = {
    "test": [("test/test_nano.onnx", "test/test_nano.vnnlib"),
             ("test/test_small.onnx", "test/test_small.vnnlib"),
             ("test/test_tiny.onnx", "test/test_tiny.vnnlib")],
    "verivital": [("verivital/Convnet_avgpool.onnx", str(p.relative_to(BENCH)))
                  for p in sorted((BENCH / "verivital" / "specs").glob("avgpool_*.vnnlib"))],
    "oval21": [("oval21/nets/cifar_base_kw.onnx", str(p.relative_to(BENCH)))
               for p in sorted((BENCH / "oval21" / "vnnlib").glob("*.vnnlib"))],
    "cifar10_resnet": [("cifar10_resnet/onnx/resnet_2b.onnx", str(p.relative_to(BENCH)))
                       for p in sorted((BENCH / "cifar10_resnet" / "vnnlib").glob("*.vnnlib"))],
}


def _find(folder: Path, rel: str) -> Path | None:
    path = folder / rel
    if path.is_file():
        return path
    hits = sorted(folder.rglob(Path(rel).name))
    return hits[0] if hits else None


def instances(cap: float, mnistfc_props: int) -> list[dict]:
    out = []
    for bench in ("test", "acasxu", "mnistfc", "eran", "verivital", "oval21", "cifar10_resnet"):
        folder = BENCH / bench
        if bench in NO_CSV:
            rows = [(BENCH / o, BENCH / v, cap) for o, v in NO_CSV[bench]]
        else:
            rows = []
            text = next(folder.glob("*instances.csv")).read_text()
            for o, v, t in csv.reader(text.splitlines()):
                po, pv = _find(folder, o.strip()), _find(folder, v.strip())
                if po is not None and pv is not None:
                    rows.append((po, pv, float(t)))
        for onnx, vnnlib, timeout in rows:
            if bench == "mnistfc" and int(vnnlib.stem.split("_")[1]) >= mnistfc_props:
                continue
            out.append({"benchmark": bench, "onnx": str(onnx.relative_to(BENCH)),
                        "vnnlib": str(vnnlib.relative_to(BENCH)), "csv_timeout": timeout,
                        "timeout": min(timeout, cap)})
    return out


def run_verify(inst: dict) -> dict:
    prop = read_vnnlib(BENCH / inst["vnnlib"])
    res = verify(BENCH / inst["onnx"], prop, inst["timeout"])
    return {**inst, "verdict": res.verdict, "time": res.time,
            "prepare_time": res.details["prepare_time"], "decided_by": res.details["decided_by"],
            "stages": res.details["stages"]}


def ball_of(lo: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, float, object, str]:
    """Centre, radius and data_range describing the box, and which description was used."""
    try:
        x0, eps = center_radius_linf(lo, up, (0.0, 1.0))
        return x0, eps, (0.0, 1.0), "clipped-ball[0,1]"
    except InputError:
        x0 = ((lo + up) / 2).clamp(lo, up)
        eps = float(torch.maximum(up - x0, x0 - lo).max()) * (1 + 1e-9)
        return x0, eps, (lo, up), "box"


def run_lipschitz(onnx: str, vnnlib: str, lip_cap: float) -> dict:
    model = resolve_model(BENCH / onnx)
    region = read_vnnlib(BENCH / vnnlib).regions[0]
    x0, eps, dr, kind = ball_of(region.lower, region.upper)
    shape = model.input_shape
    if not isinstance(dr[0], float):
        dr = (dr[0].reshape(shape), dr[1].reshape(shape))
    row = {"onnx": onnx, "vnnlib": vnnlib, "eps": eps, "ball": kind}
    for method in ("crown", "bab"):
        t0 = time.perf_counter()
        try:
            with interrupt_at(Deadline(lip_cap)):
                # bab's own time limit leaves a quarter of the cap for its set-up and the
                # final CROWN bound, so it returns its anytime result before the interrupt
                kw = {"timeout": 0.75 * lip_cap, "progress": False} if method == "bab" else {}
                r = lipbound.local_lipschitz(model, x0.reshape(shape), eps, method=method,
                                             data_range=dr, **kw)
            row[method] = {"upper": r.value, "lower": float(r.lower.max()),
                           "time": time.perf_counter() - t0, "status": r.status}
        except UnknownMethodError:
            row[method] = {"status": "unavailable"}
        except Expired:
            row[method] = {"status": f"interrupted after {lip_cap:g} s"}
        except LipboundError as exc:
            row[method] = {"status": f"error: {type(exc).__name__}: {exc}"[:300]}
    return row


def markdown(data: dict) -> str:
    lines = ["| benchmark | network | property | timeout (s) | verdict | time (s) | prep (s) "
             "| decided by |", "|---|---|---|---|---|---|---|---|"]
    for r in data["verify"]:
        lines.append(f"| {r['benchmark']} | {Path(r['onnx']).stem} | {Path(r['vnnlib']).stem} "
                     f"| {r['timeout']:g} | {r['verdict']} | {r['time']:.1f} "
                     f"| {r['prepare_time']:.1f} | {r['decided_by'] or '-'} |")
    counts: dict = {}
    for r in data["verify"]:
        c = counts.setdefault(r["benchmark"], {"unsat": 0, "sat": 0, "timeout": 0,
                                               "unknown": 0, "error": 0})
        c[r["verdict"]] += 1
    lines += ["", "| benchmark | unsat | sat | timeout | unknown | error |",
              "|---|---|---|---|---|---|"]
    for b, c in counts.items():
        lines.append(f"| {b} | {c['unsat']} | {c['sat']} | {c['timeout']} | {c['unknown']} "
                     f"| {c['error']} |")
    lines += ["", "| network | property | eps | crown upper | sampled lower | crown time (s) "
              "| bab |", "|---|---|---|---|---|---|---|"]
    for r in data["lipschitz"]:
        c, b = r["crown"], r["bab"]
        crown = (f"{c['upper']:.4g} | {c['lower']:.4g} | {c['time']:.1f}" if "upper" in c
                 else f"{c['status']} | - | -")
        bab = (f"{b['upper']:.4g} ({b['time']:.1f} s)" if "upper" in b else b["status"])
        lines.append(f"| {Path(r['onnx']).stem} | {Path(r['vnnlib']).stem} | {r['eps']:.4g} "
                     f"| {crown} | {bab} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cap", type=float, default=20.0)
    ap.add_argument("--mnistfc-props", type=int, default=4)
    ap.add_argument("--lip-props", type=int, default=2)
    ap.add_argument("--lip-cap", type=float, default=120.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="benchmarks to run (default all)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "bench_vnncomp.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"cap": args.cap, "threads": args.threads, "torch": torch.__version__,
            "verify": [], "lipschitz": []}
    todo = [i for i in instances(args.cap, args.mnistfc_props)
            if not args.only or i["benchmark"] in args.only]
    for inst in todo:
        try:
            row = run_verify(inst)
        except LipboundError as exc:
            row = {**inst, "verdict": "error", "time": 0.0, "prepare_time": 0.0,
                   "decided_by": f"{type(exc).__name__}: {exc}"[:200]}
        data["verify"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "stages"}), flush=True)
        out.write_text(json.dumps(data, indent=2))
    seen: dict[str, int] = {}
    for inst in todo:
        if seen.get(inst["onnx"], 0) >= args.lip_props:
            continue
        seen[inst["onnx"]] = seen.get(inst["onnx"], 0) + 1
        row = run_lipschitz(inst["onnx"], inst["vnnlib"], args.lip_cap)
        data["lipschitz"].append(row)
        print(json.dumps(row), flush=True)
        out.write_text(json.dumps(data, indent=2))
    out.with_suffix(".md").write_text(markdown(data))


if __name__ == "__main__":
    main()
