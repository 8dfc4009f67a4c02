"""Benchmark of the smoothing certificates on the digits test set with the shipped models.

For each sigma (``digits-smooth-<sigma>`` and its DRS pair) and each certificate it certifies
the first ``--limit`` test images (all 450 by default) and reports certified accuracy at radii
0, 0.25, 0.5, 0.75, 1.0 (Cohen et al.'s measure: correct and radius >= r), abstention rate and
time per image; ``best`` also reports how often each candidate won. ``local-margins-crown`` runs
local-margins with lipbound's CROWN output bounds (``radius_fn="output-bounds"``) on the first
``--crown-limit`` images. The sampling overhead compares ``certify(certificate="cohen")`` with
(a) the same number of plain batched forward passes of the model (no noise) and (b) a minimal
Cohen-style loop (noise + forward + argmax + bincount), medians of interleaved repetitions.

Output: JSON (``--out``), Cohen-format TSVs per (sigma, certificate) in ``--tsv-dir``, and a
Markdown table on stdout.

    OMP_NUM_THREADS=1 python experiments/bench_smoothing.py --n 10000
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import lipbound.models as zoo
from lipbound.models.digits_smooth import SIGMAS, digits_images, name_of
from lipbound.smoothing import DualPair, Smooth
from lipbound.smoothing.records import TsvWriter, certified_accuracy, jsonable

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
    model = smooth.model
    xb = x.unsqueeze(0).expand(batch, *x.shape).contiguous()
    sizes = [min(batch, n0 - i) for i in range(0, n0, batch)]
    sizes += [min(batch, n - i) for i in range(0, n, batch)]

    def plain():
        with torch.no_grad():
            for s in sizes:
                model(xb[:s])

    def minimal():
        with torch.no_grad():
            counts = torch.zeros(smooth.num_classes, dtype=torch.long)
            for s in sizes:
                noise = torch.randn_like(xb[:s]) * smooth.sigma
                counts += torch.bincount(model(xb[:s] + noise).argmax(1),
                                         minlength=smooth.num_classes)

    def certify():
        smooth.certify(x, n0=n0, n=n, alpha=0.001, batch_size=batch, certificate="cohen",
                       seed=0)

    times: dict[str, list[float]] = {"plain": [], "minimal": [], "certify": []}
    for f in (plain, minimal, certify):
        f()  # warm up
    for _ in range(reps):
        for name, f in (("plain", plain), ("minimal", minimal), ("certify", certify)):
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "samples": n0 + n,
        "batch_size": batch,
        "reps": reps,
        "median_s": med,
        "certify_over_plain_forward": med["certify"] / med["plain"],
        "certify_over_minimal_loop": med["certify"] / med["minimal"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=0, help="first N test images (0 = all)")
    ap.add_argument("--crown-limit", type=int, default=10,
                    help="images for local-margins-crown (0 = skip)")
    ap.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS))
    ap.add_argument("--certificates", nargs="+", default=list(CERTIFICATES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overhead-reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="experiments/out/bench_smoothing.json")
    ap.add_argument("--tsv-dir", default="experiments/out/smoothing_tsv")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    _, _, xte, yte = digits_images()
    if args.limit:
        xte, yte = xte[: args.limit], yte[: args.limit]
    tsv_dir = Path(args.tsv_dir)
    tsv_dir.mkdir(parents=True, exist_ok=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    certs = list(args.certificates)
    if args.crown_limit and "local-margins-crown" not in certs:
        certs.append("local-margins-crown")

    results = []
    for sigma in args.sigmas:
        model = zoo.load(name_of(sigma))
        pair = DualPair(zoo.load(name_of(sigma, "left")), zoo.load(name_of(sigma, "right")),
                        split="checkerboard")
        smooth = Smooth(model, 10, sigma, dual=pair, input_shape=(1, 8, 8))
        ovh = overhead(smooth, xte[0], args.n0, args.n, args.batch, args.overhead_reps)
        print(f"sigma {sigma}: overhead {ovh['certify_over_plain_forward']:.2f}x plain forward, "
              f"{ovh['certify_over_minimal_loop']:.2f}x minimal loop", flush=True)
        for cert in certs:
            name, opts = options_for(cert)
            count = len(xte) if cert != "local-margins-crown" else min(args.crown_limit, len(xte))
            rows, wins, times, chosen = [], {}, [], {}
            with TsvWriter(tsv_dir / f"sigma{sigma:g}_{cert}.tsv") as tsv:
                for i in range(count):
                    label = int(yte[i])
                    c = smooth.certify(xte[i], n0=args.n0, n=args.n, alpha=args.alpha,
                                       batch_size=args.batch, certificate=name,
                                       seed=args.seed + i, **opts)
                    tsv.write(i, label, c)
                    rows.append({"idx": i, "label": label, "predict": c.prediction,
                                 "radius": c.radius, "correct": int(c.prediction == label)})
                    times.append(c.time)
                    if name == "best":
                        w = c.details.get("winner") or "abstain"
                        wins[w] = wins.get(w, 0) + 1
                    if name in ("lvm", "lipschitz") and "map" in c.details:
                        key = f"{c.details['map']}@{c.details['t']:g}"
                        chosen[key] = chosen.get(key, 0) + 1
                    if name == "local-margins":
                        key = "R>0" if c.details.get("R", 0) > 0 else "R=0"
                        chosen[key] = chosen.get(key, 0) + 1
            acc = certified_accuracy(rows, RADII)
            entry = {
                "sigma": sigma,
                "certificate": cert,
                "images": count,
                "certified_accuracy": {f"{r:g}": a for r, a in acc.items()},
                "abstain_rate": sum(r["predict"] < 0 for r in rows) / count,
                "mean_radius_correct": statistics.fmean(
                    [r["radius"] if r["correct"] else 0.0 for r in rows]),
                "time_per_image_s": statistics.fmean(times),
                "options": opts,
            }
            if wins:
                entry["winners"] = wins
            if chosen:
                entry["choices"] = dict(sorted(chosen.items(), key=lambda kv: -kv[1]))
            results.append(entry)
            print(f"  {cert:20s} " + " ".join(f"{a:.3f}" for a in acc.values())
                  + f"  abstain {entry['abstain_rate']:.3f}  {entry['time_per_image_s']*1e3:.1f} "
                  f"ms/image", flush=True)
        results.append({"sigma": sigma, "overhead": ovh})

    doc = {
        "benchmark": "bench_smoothing",
        "settings": {
            "n0": args.n0, "n": args.n, "alpha": args.alpha, "batch_size": args.batch,
            "images": len(xte), "crown_images": args.crown_limit, "seed": args.seed,
            "radii": list(RADII), "threads": args.threads,
            "data": "sklearn digits test split (450 images), lipbound.models.digits_smooth",
        },
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine()},
        "results": results,
    }
    with open(args.out, "w") as fh:
        json.dump(jsonable(doc), fh, indent=1)
    print(f"\nwrote {args.out}")
    print("\n| sigma | certificate | images | " + " | ".join(f"r={r:g}" for r in RADII)
          + " | abstain | ms/image |")
    print("|---|---|---|" + "---|" * len(RADII) + "---|---|")
    for e in results:
        if "certificate" not in e:
            continue
        accs = " | ".join(f"{v:.3f}" for v in e["certified_accuracy"].values())
        print(f"| {e['sigma']:g} | {e['certificate']} | {e['images']} | {accs} | "
              f"{e['abstain_rate']:.3f} | {e['time_per_image_s']*1e3:.1f} |")
    print("\n| sigma | certify / plain forward | certify / minimal Cohen loop |")
    print("|---|---|---|")
    for e in results:
        if "overhead" in e:
            o = e["overhead"]
            print(f"| {e['sigma']:g} | {o['certify_over_plain_forward']:.2f}x | "
                  f"{o['certify_over_minimal_loop']:.2f}x |")


if __name__ == "__main__":
    main()
