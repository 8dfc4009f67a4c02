"""Verification verdicts and local Lipschitz bounds on the shared VNN-COMP 2021 networks.

Instances: the rows of each benchmark's instances CSV whose network and property are shared.
Folders shipped without a CSV get the time limit of their CSV in the public VNN-COMP 2021
repository (``NO_CSV_TIMEOUT``: verivital avgpool 300 s, oval21 720 s, cifar10_resnet 300 s; the
three test networks are not in that CSV and get 60 s).

Two parts, each resumable (rows already in the JSON are skipped, so a long run can be done in
pieces; ``--redo`` recomputes them):

- ``verify``: ``lipbound.verify`` with the instance's time limit (``--cap S`` lowers every limit to
  at most S seconds; default: none, the CSV limits). Preparation (loading, tracing, opening
  onnxruntime) is untimed and reported separately, as in VNN-COMP. Every "sat" is re-checked here
  on a fresh onnxruntime session of the original file (x inside the box, f(x) in the unsafe set,
  no tolerance) and the result stored as ``recheck``.
- ``lipschitz``: at the box of EVERY shared property of each network, ``local_lipschitz`` with
  ``crown`` and ``bab`` (l_inf input norm, all output rows, ``max_j sup ||grad f_j||_1``), the
  box written as centre and radius clipped to [0, 1] when it is a clipped ball in [0, 1], else
  the box itself as a ball clipped to the box. Properties with the same box share one
  computation. Each call is interrupted after the network's cap (``--lip-cap``, overridden per
  network by ``--lip-cap-net STEM=SECONDS``; bab: ``--bab-cap`` / ``--bab-cap-net``, default the
  same); bab gets 3/4 of its cap as its own limit so it returns its anytime bound. ``lower`` is
  the best sampled/attained gradient norm (a lower bound).

    nice -n 5 python experiments/bench_vnncomp.py --part verify --only eran verivital --threads 1
    nice -n 5 python experiments/bench_vnncomp.py --part lipschitz --lip-cap 60 \\
        --lip-cap-net resnet_2b=120 --threads 1
    python experiments/bench_vnncomp.py --part table     # rewrite the .md from the JSON
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import lipbound
from lipbound.errors import InputError, LipboundError, UnknownMethodError
from lipbound.inputs import resolve_model
from lipbound.io import center_radius_linf, read_vnnlib
from lipbound.verify import verify
from lipbound.verify.deadline import Deadline, Expired, interrupt_at

BENCH = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "vnncomp2021"
BENCHMARKS = ("test", "eran", "verivital", "cifar10_resnet", "oval21", "acasxu", "mnistfc")
NO_CSV = {
    "test": ("test", ["test_nano", "test_small", "test_tiny"]),
    "verivital": ("verivital/Convnet_avgpool.onnx", "verivital/specs/avgpool_*.vnnlib"),
    "oval21": ("oval21/nets/cifar_base_kw.onnx", "oval21/vnnlib/*.vnnlib"),
    "cifar10_resnet": ("cifar10_resnet/onnx/resnet_2b.onnx", "cifar10_resnet/vnnlib/*.vnnlib"),
}
# time limits of these instances in the public VNN-COMP 2021 repository's CSVs
# (benchmarks/verivital/mnist_Conv_pool_instances.csv, oval21/oval21_instances.csv,
# cifar10_resnet/instance.csv); the test networks are not in benchmarks/test's CSV
NO_CSV_TIMEOUT = {"test": 60.0, "verivital": 300.0, "oval21": 720.0, "cifar10_resnet": 300.0}


def _find(folder: Path, rel: str) -> Path | None:
    path = folder / rel
    if path.is_file():
        return path
    hits = sorted(folder.rglob(Path(rel).name))
    return hits[0] if hits else None


def _no_csv_rows(bench: str) -> list[tuple[Path, Path]]:
    onnx, pattern = NO_CSV[bench]
    if bench == "test":
        return [(BENCH / onnx / f"{n}.onnx", BENCH / onnx / f"{n}.vnnlib") for n in pattern]
    return [(BENCH / onnx, p) for p in sorted(BENCH.glob(pattern))]


def instances(cap: float | None) -> list[dict]:
    """Every shared instance with its CSV time limit and the limit used (``min(csv, cap)``)."""
    out = []
    for bench in BENCHMARKS:
        folder = BENCH / bench
        if bench in NO_CSV:
            rows = [(o, v, NO_CSV_TIMEOUT[bench]) for o, v in _no_csv_rows(bench)]
        else:
            rows = []
            text = next(folder.glob("*instances.csv")).read_text()
            for o, v, t in csv.reader(text.splitlines()):
                po, pv = _find(folder, o.strip()), _find(folder, v.strip())
                if po is not None and pv is not None:
                    rows.append((po, pv, float(t)))
        for onnx, vnnlib, timeout in rows:
            out.append({"benchmark": bench, "onnx": str(onnx.relative_to(BENCH)),
                        "vnnlib": str(vnnlib.relative_to(BENCH)), "csv_timeout": timeout,
                        "timeout": timeout if cap is None else min(timeout, cap)})
    return out


# ------------------------------------------------------------------------------ verification
def recheck(onnx: Path, prop, x: torch.Tensor) -> dict:
    """Independent check of a counterexample on a fresh onnxruntime session (no tolerance)."""
    import onnxruntime as ort

    data = onnx.read_bytes()
    if onnx.suffix == ".gz":
        data = gzip.decompress(data)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    dt = np.float64 if inp.type == "tensor(double)" else np.float32
    xs = x.numpy().astype(dt)
    y = np.asarray(sess.run(None, {inp.name: xs.reshape(shape)})[0], dtype=np.float64)
    x64 = torch.from_numpy(xs.astype(np.float64)).reshape(-1)
    y64 = torch.from_numpy(y).reshape(-1)
    return {"in_box": any(r.contains(x64) for r in prop.regions),
            "violates": bool(prop.is_counterexample(x64, y64)), "y": y64.tolist()}


def run_verify(inst: dict) -> dict:
    prop = read_vnnlib(BENCH / inst["vnnlib"])
    res = verify(BENCH / inst["onnx"], prop, inst["timeout"])
    row = {**inst, "verdict": res.verdict, "time": res.time,
           "prepare_time": res.details["prepare_time"], "decided_by": res.details["decided_by"],
           "stages": res.details["stages"]}
    if res.verdict == "sat":
        x, _ = res.counterexample
        row["recheck"] = recheck(BENCH / inst["onnx"], prop, x)
        row["counterexample_x"] = x.tolist()
    return row


# ------------------------------------------------------------------------------ Lipschitz
def ball_of(lo: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, float, object, str]:
    """Centre, radius and data_range describing the box, and which description was used."""
    try:
        x0, eps = center_radius_linf(lo, up, (0.0, 1.0))
        return x0, eps, (0.0, 1.0), "clipped-ball[0,1]"
    except InputError:
        x0 = ((lo + up) / 2).clamp(lo, up)
        eps = float(torch.maximum(up - x0, x0 - lo).max()) * (1 + 1e-9)
        return x0, eps, (lo, up), "box"


def _lip_one(model, method: str, x0, eps: float, dr, cap: float) -> dict:
    """One ``local_lipschitz`` call interrupted after ``cap`` seconds."""
    t0 = time.perf_counter()
    try:
        with interrupt_at(Deadline(cap)):
            # bab's own limit leaves a quarter of the cap for its set-up and final CROWN bound
            kw = {"timeout": 0.75 * cap, "progress": False} if method == "bab" else {}
            r = lipbound.local_lipschitz(model, x0, eps, method=method, data_range=dr, **kw)
        return {"upper": r.value, "lower": float(r.lower.max()),
                "time": time.perf_counter() - t0, "status": r.status}
    except UnknownMethodError:
        return {"status": "unavailable"}
    except Expired:
        return {"status": f"interrupted after {cap:g} s", "time": cap}
    except LipboundError as exc:
        return {"status": f"error: {type(exc).__name__}: {exc}"[:300]}


def run_lipschitz(onnx: str, vnnlib: str, caps: dict[str, float], methods: list[str]) -> dict:
    model = resolve_model(BENCH / onnx)
    prop = read_vnnlib(BENCH / vnnlib)
    region = prop.regions[0]
    x0, eps, dr, kind = ball_of(region.lower, region.upper)
    shape = model.input_shape
    if not isinstance(dr[0], float):
        dr = (dr[0].reshape(shape), dr[1].reshape(shape))
    row = {"onnx": onnx, "vnnlib": vnnlib, "eps": eps, "ball": kind, "cap": caps["crown"],
           "bab_cap": caps["bab"], "regions": len(prop.regions)}
    for method in methods:
        row[method] = _lip_one(model, method, x0.reshape(shape), eps, dr, caps[method])
    return row


def box_key(vnnlib: str) -> str:
    region = read_vnnlib(BENCH / vnnlib).regions[0]
    return str(hash((tuple(region.lower.tolist()), tuple(region.upper.tolist()))))


# ------------------------------------------------------------------------------ tables
EXPECTED = Path(__file__).parent / "vnncomp2021_expected.csv"


def expected_results() -> dict[tuple[str, str], str]:
    """(network stem, property stem) -> consensus VNN-COMP 2021 verdict (see the CSV's header)."""
    lines = [ln for ln in EXPECTED.read_text().splitlines() if not ln.startswith("#")]
    return {(r["network"], r["property"]): r["expected"] for r in csv.DictReader(lines)}


def agreement(verdict: str, expected: str | None) -> str:
    """'CONTRADICTS' when a decided verdict is the opposite of the expected one."""
    if expected is None or expected == "unknown" or verdict not in ("sat", "unsat"):
        return "-"
    return "agrees" if verdict == expected else "CONTRADICTS"


def _fmt_lip(c: dict) -> str:
    if "upper" not in c:
        return f"{c.get('status', '-')} | -"
    return f"{c['upper']:.4g} | {c['time']:.1f}"


def _median(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f}" if xs else "-"


def verdict_summary(rows: list[dict]) -> list[str]:
    lines = ["| benchmark | instances | time limit (s) | unsat | sat | timeout | unknown | error "
             "| median time, all (s) | median time, decided (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for b in BENCHMARKS:
        rs = [r for r in rows if r["benchmark"] == b]
        if not rs:
            continue
        c = {v: sum(r["verdict"] == v for r in rs)
             for v in ("unsat", "sat", "timeout", "unknown", "error")}
        limits = sorted({f"{r['timeout']:g}" for r in rs})
        decided = [r["time"] for r in rs if r["verdict"] in ("unsat", "sat")]
        lines.append(f"| {b} | {len(rs)} | {', '.join(limits)} | {c['unsat']} | {c['sat']} "
                     f"| {c['timeout']} | {c['unknown']} | {c['error']} "
                     f"| {_median([r['time'] for r in rs])} | {_median(decided)} |")
    return lines


def _rng(xs: list[float]) -> str:
    return "-" if not xs else (f"{min(xs):.4g}" if len(xs) == 1
                               else f"{min(xs):.4g} – {max(xs):.4g}")


def lipschitz_summary(rows: list[dict]) -> list[str]:
    """Per network: ranges over its distinct property boxes, median times, interruptions."""
    lines = ["| network | property boxes | crown upper | crown median time (s) | bab upper "
             "| bab median time (s) | sampled lower | not finished (crown/bab) |",
             "|---" * 8 + "|"]
    nets = list(dict.fromkeys(r["onnx"] for r in rows))
    for net in nets:
        rs = [r for r in rows if r["onnx"] == net and "same_box_as" not in r]
        col = {m: [r.get(m, {}) for r in rs] for m in ("crown", "bab")}
        up = {m: [c["upper"] for c in col[m] if "upper" in c] for m in col}
        tm = {m: [c["time"] for c in col[m] if "upper" in c] for m in col}
        low = [max(c.get("lower", -1) for c in (r.get("crown", {}), r.get("bab", {})))
               for r in rs]
        miss = "/".join(str(sum("upper" not in c for c in col[m])) for m in col)
        lines.append(f"| {Path(net).stem} | {len(rs)} | {_rng(up['crown'])} "
                     f"| {_median(tm['crown'])} | {_rng(up['bab'])} | {_median(tm['bab'])} "
                     f"| {_rng([v for v in low if v >= 0])} | {miss} |")
    bad = [r["vnnlib"] for r in rows
           if max(c.get("lower", -1) for c in (r.get("crown", {}), r.get("bab", {})))
           > min([c["upper"] for c in (r.get("crown", {}), r.get("bab", {})) if "upper" in c],
                 default=float("inf"))]
    lines += ["", f"Sanity: sampled lower <= every certified upper on all rows: "
              f"{'yes' if not bad else 'NO: ' + ', '.join(bad)}"]
    return lines


def markdown(data: dict) -> str:
    rows = data["verify"]
    exp = expected_results()
    lines = ["## Verdicts per benchmark", ""] + verdict_summary(rows)
    lines += ["", "## Verdicts per instance", "",
              "| benchmark | network | property | limit (s) | CSV limit (s) | verdict | time (s) "
              "| prep (s) | decided by | cex recheck | VNN-COMP 2021 | |", "|---" * 12 + "|"]
    for r in rows:
        rc = r.get("recheck")
        rc = "-" if rc is None else ("ok" if rc["in_box"] and rc["violates"] else "FAILED")
        e = exp.get((Path(r["onnx"]).stem, Path(r["vnnlib"]).stem))
        lines.append(f"| {r['benchmark']} | {Path(r['onnx']).stem} | {Path(r['vnnlib']).stem} "
                     f"| {r['timeout']:g} | {r['csv_timeout']:g} | {r['verdict']} "
                     f"| {r['time']:.1f} | {r['prepare_time']:.1f} | {r['decided_by'] or '-'} "
                     f"| {rc} | {e or '-'} | {agreement(r['verdict'], e)} |")
    lines += ["", "## Local Lipschitz bounds per network (ranges over the property boxes)", ""]
    lines += lipschitz_summary(data["lipschitz"])
    lines += ["", "## Local Lipschitz bounds (l_inf input, max_j sup ||grad f_j||_1 over the box)",
              "", "| network | property | eps | ball | cap crown/bab (s) | crown upper "
              "| crown time (s) | bab upper | bab time (s) | sampled lower |", "|---" * 10 + "|"]
    for r in data["lipschitz"]:
        c, b = r.get("crown", {}), r.get("bab", {})
        low = max([m["lower"] for m in (c, b) if "lower" in m], default=None)
        lines.append(f"| {Path(r['onnx']).stem} | {Path(r['vnnlib']).stem} | {r['eps']:.4g} "
                     f"| {r['ball']} | {r.get('cap', '-')}/{r.get('bab_cap', '-')} "
                     f"| {_fmt_lip(c)} | {_fmt_lip(b)} "
                     f"| {'-' if low is None else f'{low:.4g}'} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ driver
def _save(out: Path, data: dict) -> None:
    out.write_text(json.dumps(data, indent=1))
    out.with_suffix(".md").write_text(markdown(data))


def _net_caps(items: list[str] | None) -> dict[str, float]:
    caps = {}
    for item in items or []:
        stem, sec = item.split("=")
        caps[stem] = float(sec)
    return caps


def do_verify(args, data: dict, out: Path, todo: list[dict]) -> None:
    done = {(r["onnx"], r["vnnlib"], r["timeout"]) for r in data["verify"]}
    for inst in todo:
        key = (inst["onnx"], inst["vnnlib"], inst["timeout"])
        if key in done and not args.redo:
            continue
        try:
            row = run_verify(inst)
        except LipboundError as exc:
            row = {**inst, "verdict": "error", "time": 0.0, "prepare_time": 0.0,
                   "decided_by": f"{type(exc).__name__}: {exc}"[:200]}
        data["verify"] = [r for r in data["verify"]
                          if (r["onnx"], r["vnnlib"], r["timeout"]) != key] + [row]
        print(json.dumps({k: v for k, v in row.items()
                          if k not in ("stages", "counterexample_x")})[:400], flush=True)
        _save(out, data)


def do_lipschitz(args, data: dict, out: Path, todo: list[dict]) -> None:
    crown_caps, bab_caps = _net_caps(args.lip_cap_net), _net_caps(args.bab_cap_net)
    done = {(r["onnx"], r["vnnlib"]) for r in data["lipschitz"]}
    computed: dict[tuple[str, str], dict] = {}
    for inst in todo:
        key = (inst["onnx"], inst["vnnlib"])
        if (key in done and not args.redo) or key in computed:
            continue
        stem = Path(inst["onnx"]).stem
        cap = crown_caps.get(stem, args.lip_cap)
        caps = {"crown": cap, "bab": bab_caps.get(stem, args.bab_cap or cap)}
        same = (inst["onnx"], box_key(inst["vnnlib"]))
        if same in computed:  # same network and box: the same Lipschitz problem
            row = {**computed[same], "vnnlib": inst["vnnlib"], "same_box_as":
                   computed[same]["vnnlib"]}
        else:
            row = run_lipschitz(inst["onnx"], inst["vnnlib"], caps, args.methods)
            old = next((r for r in data["lipschitz"] if (r["onnx"], r["vnnlib"]) == key), None)
            if old is not None:  # --redo of some methods: keep the others' results and caps
                row = {**old, **{m: row[m] for m in args.methods},
                       **({"cap": caps["crown"]} if "crown" in args.methods else {}),
                       **({"bab_cap": caps["bab"]} if "bab" in args.methods else {})}
            computed[same] = row
        computed[key] = row
        data["lipschitz"] = [r for r in data["lipschitz"]
                             if (r["onnx"], r["vnnlib"]) != key] + [row]
        print(json.dumps(row), flush=True)
        _save(out, data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("verify", "lipschitz", "table"), required=True)
    ap.add_argument("--cap", type=float, default=None,
                    help="lower every verification time limit to at most this (default: none)")
    ap.add_argument("--only", nargs="*", help="benchmarks to run (default all)")
    ap.add_argument("--nets", nargs="*", help="network stems to run (default all)")
    ap.add_argument("--props", nargs="*", help="property stems to run (default all)")
    ap.add_argument("--lip-cap", type=float, default=60.0)
    ap.add_argument("--lip-cap-net", nargs="*", metavar="STEM=SECONDS")
    ap.add_argument("--bab-cap", type=float, default=None, help="default: --lip-cap")
    ap.add_argument("--bab-cap-net", nargs="*", metavar="STEM=SECONDS")
    ap.add_argument("--methods", nargs="*", default=["crown", "bab"])
    ap.add_argument("--redo", action="store_true", help="recompute rows already in the JSON")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "bench_vnncomp.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = (json.loads(out.read_text()) if out.is_file()
            else {"torch": torch.__version__, "verify": [], "lipschitz": []})
    data["threads"] = args.threads
    todo = [i for i in instances(args.cap)
            if (not args.only or i["benchmark"] in args.only)
            and (not args.nets or Path(i["onnx"]).stem in args.nets)
            and (not args.props or Path(i["vnnlib"]).stem in args.props)]
    if args.part == "verify":
        do_verify(args, data, out, todo)
    elif args.part == "lipschitz":
        do_lipschitz(args, data, out, todo)
    _save(out, data)


if __name__ == "__main__":
    main()
