"""Benchmark of the smoothing certificates on the digits test set with the shipped models.

For each sigma (``digits-smooth-<sigma>`` and its DRS pair) and each certificate it certifies
every ``--stride``-th test image (all 450 by default; per-input seeds from ``(seed, index)``)
and reports certified accuracy at radii
0, 0.25, 0.5, 0.75, 1.0 (Cohen et al.'s measure: correct and radius >= r), abstention rate and
time per image; ``best`` also reports how often each candidate won. ``local-margins-crown`` runs
local-margins with lipbound's CROWN output bounds (``radius_fn="output-bounds"``) on the first
``--crown-limit`` images. The sampling overhead compares ``certify(certificate="cohen")`` with
(a) the same number of plain batched forward passes of the model (no noise) and (b) a minimal
Cohen-style loop (noise + forward + argmax + bincount), medians of interleaved repetitions in
process CPU time (the noise alone is timed too: on CPU it costs about as much as this small
model's forward pass).

Every certificate's time per image is also given as a multiple of the bare forward pass: the
wall time of ``n0 + n`` plain batched forward passes of the main model at ``--batch`` (no noise),
measured once per sigma (median of ``--overhead-reps``). Where the Adversarial Robustness
Toolbox is importable (``art``; not a dependency), an ``art-cohen`` row certifies the same
images with ART's ``PyTorchRandomizedSmoothing.certify`` (Cohen et al.'s CERTIFY, numpy
noise) for comparison; otherwise that row is reported as skipped.

Output: JSON (``--out``), Cohen-format TSVs per (sigma, certificate) in ``--tsv-dir``, and a
Markdown table on stdout.

    OMP_NUM_THREADS=1 python experiments/bench_smoothing.py --n 10000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import lipbound.models as zoo
from lipbound.jsonutil import jsonable
from lipbound.models.digits_smooth import SIGMAS, digits_images, name_of
from lipbound.smoothing import DualPair, Smooth
from lipbound.smoothing.dataset import certify_dataset
from lipbound.smoothing.records import TsvWriter, certified_accuracy

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
CERTIFICATES = ("cohen", "lvm", "lipschitz", "local-margins", "dual", "best")


def options_for(cert: str) -> tuple[str, dict]:
    if cert == "local-margins":
        return cert, {"radius_fn": "global-lipschitz"}
    if cert == "local-margins-crown":
        return "local-margins", {"radius_fn": "output-bounds"}
    if cert == "best":
        return cert, {"radius_fn": "global-lipschitz"}
    return cert, {}


def overhead(smooth: Smooth, x: torch.Tensor, n0: int, n: int, batch: int, reps: int) -> dict:
    """Medians over interleaved repetitions, in CPU time of this process (less disturbed by
    other processes on a shared machine than wall time) and in wall time."""
    model = smooth.model
    xb = x.unsqueeze(0).expand(batch, *x.shape).contiguous()
    sizes = [min(batch, n0 - i) for i in range(0, n0, batch)]
    sizes += [min(batch, n - i) for i in range(0, n, batch)]

    def plain():
        with torch.no_grad():
            for s in sizes:
                model(xb[:s])

    def noise():
        gen = torch.Generator().manual_seed(0)
        for s in sizes:
            torch.randn(xb[:s].shape, generator=gen)

    def minimal():
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            counts = torch.zeros(smooth.num_classes, dtype=torch.long)
            for s in sizes:
                eps = torch.randn(xb[:s].shape, generator=gen) * smooth.sigma
                counts += torch.bincount(model(xb[:s] + eps).argmax(1),
                                         minlength=smooth.num_classes)

    def certify():
        smooth.certify(x, n0=n0, n=n, alpha=0.001, batch_size=batch, certificate="cohen",
                       seed=0)

    fns = {"plain_forward": plain, "noise_only": noise, "minimal_loop": minimal,
           "certify": certify}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()  # warm up
    for _ in range(reps):
        for name, f in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - t0)
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    return {
        "samples": n0 + n,
        "batch_size": batch,
        "reps": reps,
        "median_cpu_s": med_cpu,
        "median_wall_s": med_wall,
        "certify_over_plain_forward": med_cpu["certify"] / med_cpu["plain_forward"],
        "certify_over_minimal_loop": med_cpu["certify"] / med_cpu["minimal_loop"],
        "noise_over_plain_forward": med_cpu["noise_only"] / med_cpu["plain_forward"],
        "wall_certify_over_plain_forward": med_wall["certify"] / med_wall["plain_forward"],
    }


def forward_time(smooth: Smooth, x: torch.Tensor, n0: int, n: int, batch: int,
                 reps: int) -> float:
    """Median wall seconds (like the certificates' times) of ``n0 + n`` plain forward passes
    of the main model (no noise) in batches of ``batch``: the unit of the "x forward" column."""
    model = smooth.model
    xb = x.unsqueeze(0).expand(batch, *x.shape).contiguous()
    sizes = [min(batch, n0 - i) for i in range(0, n0, batch)]
    sizes += [min(batch, n - i) for i in range(0, n, batch)]
    times = []
    with torch.no_grad():
        for rep in range(reps + 1):
            c0 = time.perf_counter()
            for s in sizes:
                model(xb[:s])
            if rep:  # the first is a warm-up
                times.append(time.perf_counter() - c0)
    return statistics.median(times)


def art_cohen(model, sigma: float, xte, yte, args) -> dict:
    """ART's Cohen CERTIFY on the same images, or the reason it cannot run."""
    try:
        import numpy as np
        from art.estimators.certification.randomized_smoothing import (
            PyTorchRandomizedSmoothing,
        )
    except Exception as exc:  # not installed (the usual case) or broken
        return {"sigma": sigma, "certificate": "art-cohen",
                "skipped": f"art not importable: {type(exc).__name__}: {exc}"}
    np.random.seed(args.seed)
    clf = PyTorchRandomizedSmoothing(
        model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(xte.shape[1:]),
        nb_classes=10, device_type="cpu", sample_size=args.n0, scale=sigma, alpha=args.alpha)
    rows, times = [], []
    for x, y in zip(xte, yte):
        c0 = time.process_time()
        pred, rad = clf.certify(x.unsqueeze(0).numpy(), n=args.n, batch_size=args.batch)
        times.append(time.process_time() - c0)
        rows.append({"correct": int(pred[0]) == int(y), "radius": float(rad[0]),
                     "predict": int(pred[0])})
    acc = certified_accuracy(rows, RADII)
    return {
        "sigma": sigma,
        "certificate": "art-cohen",
        "images": len(rows),
        "certified_accuracy": {f"{r:g}": a for r, a in acc.items()},
        "abstain_rate": sum(r["predict"] < 0 for r in rows) / len(rows),
        "mean_radius_correct": statistics.fmean(
            [r["radius"] if r["correct"] else 0.0 for r in rows]),
        "time_per_image_s": statistics.fmean(times),
        "options": {"library": "art", "noise": "numpy, unseeded per image"},
    }


def run_certificate(smooth: Smooth, cert: str, xte, yte, idx, args, tsv_path) -> dict:
    name, opts = options_for(cert)
    wins: dict[str, int] = {}
    chosen: dict[str, int] = {}
    with TsvWriter(tsv_path) as tsv:
        recs = certify_dataset(smooth, xte, yte, indices=idx, n0=args.n0, n=args.n,
                               alpha=args.alpha, batch_size=args.batch, certificate=name,
                               seed=args.seed, on_record=tsv.write_record, **opts)
    for r in recs:
        d = r["details"]
        if name == "best":
            w = d.get("winner") or "abstain"
            wins[w] = wins.get(w, 0) + 1
        if name in ("lvm", "lipschitz") and "map" in d:
            key = f"{d['map']}@{d['t']:g}"
            chosen[key] = chosen.get(key, 0) + 1
        if name == "local-margins":
            key = "R>0" if d.get("R", 0) > 0 else "R=0"
            chosen[key] = chosen.get(key, 0) + 1
    rows = [{"correct": r["correct"], "radius": r["radius"]} for r in recs]
    acc = certified_accuracy(rows, RADII)
    entry = {
        "sigma": smooth.sigma,
        "certificate": cert,
        "images": len(recs),
        "certified_accuracy": {f"{r:g}": a for r, a in acc.items()},
        "abstain_rate": sum(r["predict"] < 0 for r in recs) / len(recs),
        "mean_radius_correct": statistics.fmean(
            [r["radius"] if r["correct"] else 0.0 for r in recs]),
        "time_per_image_s": statistics.fmean([r["time"] for r in recs]),
        "options": opts,
    }
    if wins:
        entry["winners"] = wins
    if chosen:
        entry["choices"] = dict(sorted(chosen.items(), key=lambda kv: -kv[1]))
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--stride", type=int, default=1, help="every k-th test image (1 = all 450)")
    ap.add_argument("--limit", type=int, default=0, help="at most N images after --stride")
    ap.add_argument("--crown-limit", type=int, default=10,
                    help="images for local-margins-crown (0 = skip)")
    ap.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS))
    ap.add_argument("--certificates", nargs="+", default=list(CERTIFICATES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overhead-reps", type=int, default=15)
    ap.add_argument("--overhead-batches", type=int, nargs="+", default=[1000, 2000])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-art", dest="art", action="store_false",
                    help="leave out the ART Cohen comparison row")
    ap.add_argument("--out", default="experiments/out/bench_smoothing.json")
    ap.add_argument("--tsv-dir", default="experiments/out/smoothing_tsv")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    _, _, xte, yte = digits_images()
    idx = list(range(0, len(xte), args.stride))
    if args.limit:
        idx = idx[: args.limit]
    xte, yte = xte[idx], yte[idx]
    tsv_dir = Path(args.tsv_dir)
    tsv_dir.mkdir(parents=True, exist_ok=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    certs = list(args.certificates)
    if args.crown_limit and "local-margins-crown" not in certs:
        certs.append("local-margins-crown")
    if args.art and "art-cohen" not in certs:
        certs.append("art-cohen")

    results = []
    t_start = time.perf_counter()
    for sigma in args.sigmas:
        model = zoo.load(name_of(sigma))
        pair = DualPair(zoo.load(name_of(sigma, "left")), zoo.load(name_of(sigma, "right")),
                        split="checkerboard")
        smooth = Smooth(model, 10, sigma, dual=pair, input_shape=(1, 8, 8))
        fwd = forward_time(smooth, xte[0], args.n0, args.n, args.batch, args.overhead_reps)
        results.append({"sigma": sigma, "forward_cpu_s": fwd, "batch_size": args.batch,
                        "samples": args.n0 + args.n})
        for b in args.overhead_batches:
            ovh = overhead(smooth, xte[0], args.n0, args.n, b, args.overhead_reps)
            print(f"sigma {sigma} batch {b}: certify {ovh['certify_over_plain_forward']:.2f}x "
                  f"plain forward, {ovh['certify_over_minimal_loop']:.2f}x minimal loop "
                  f"(noise alone {ovh['noise_over_plain_forward']:.2f}x forward)", flush=True)
            results.append({"sigma": sigma, "overhead": ovh})
        for cert in certs:
            count = len(idx) if cert != "local-margins-crown" else min(args.crown_limit, len(idx))
            if cert == "art-cohen":
                entry = art_cohen(model, sigma, xte, yte, args)
            else:
                entry = run_certificate(smooth, cert, xte[:count], yte[:count], idx[:count],
                                        args, tsv_dir / f"sigma{sigma:g}_{cert}.tsv")
            results.append(entry)
            if "skipped" in entry:
                print(f"  {cert:20s} skipped: {entry['skipped']}", flush=True)
                continue
            entry["time_over_forward"] = entry["time_per_image_s"] / fwd
            accs = " ".join(f"{a:.3f}" for a in entry["certified_accuracy"].values())
            print(f"  {cert:20s} {accs}  abstain {entry['abstain_rate']:.3f}  "
                  f"{entry['time_per_image_s'] * 1e3:.1f} ms/image "
                  f"({entry['time_over_forward']:.2f}x forward)", flush=True)

    doc = {
        "benchmark": "bench_smoothing",
        "settings": {
            "n0": args.n0, "n": args.n, "alpha": args.alpha, "batch_size": args.batch,
            "images": len(idx), "stride": args.stride, "crown_images": args.crown_limit,
            "seed": args.seed, "seeds": "lipbound.smoothing.dataset.input_seed(seed, index)",
            "radii": list(RADII), "threads": args.threads,
            "data": "sklearn digits test split (450 images), lipbound.models.digits_smooth",
        },
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count()},
        "total_wall_s": time.perf_counter() - t_start,
        "results": results,
    }
    with open(args.out, "w") as fh:
        json.dump(jsonable(doc), fh, indent=1)
    print(f"\nwrote {args.out}")
    print_tables(results)


def print_tables(results: list[dict]) -> None:
    print("\n| sigma | certificate | images | " + " | ".join(f"r={r:g}" for r in RADII)
          + " | abstain | ms/image | x forward |")
    print("|---|---|---|" + "---|" * len(RADII) + "---|---|---|")
    for e in results:
        if "certificate" not in e:
            continue
        if "skipped" in e:
            print(f"| {e['sigma']:g} | {e['certificate']} | skipped: {e['skipped']} |")
            continue
        accs = " | ".join(f"{v:.3f}" for v in e["certified_accuracy"].values())
        print(f"| {e['sigma']:g} | {e['certificate']} | {e['images']} | {accs} | "
              f"{e['abstain_rate']:.3f} | {e['time_per_image_s'] * 1e3:.1f} | "
              f"{e.get('time_over_forward', float('nan')):.2f} |")
    print("\n| sigma | batch | forward ms | noise ms | minimal loop ms | certify ms | "
          "certify / forward | certify / minimal loop |")
    print("|---|---|---|---|---|---|---|---|")
    for e in results:
        if "overhead" in e:
            o, m = e["overhead"], e["overhead"]["median_cpu_s"]
            print(f"| {e['sigma']:g} | {o['batch_size']} | {m['plain_forward'] * 1e3:.2f} | "
                  f"{m['noise_only'] * 1e3:.2f} | {m['minimal_loop'] * 1e3:.2f} | "
                  f"{m['certify'] * 1e3:.2f} | {o['certify_over_plain_forward']:.2f}x | "
                  f"{o['certify_over_minimal_loop']:.2f}x |")


if __name__ == "__main__":
    main()
