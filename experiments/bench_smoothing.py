"""Benchmark of the smoothing certificates on shipped noise-trained models, unconstrained and
1-Lipschitz.

Cases (``--models``; sigma is the one each model was trained at): ``digits-smooth-<sigma>``
(unconstrained MLP, with its DRS pair for ``dual``), ``digits-lipschitz-smooth-<sigma>``
(every layer of spectral norm <= 1), ``mnist1d-smooth-<sigma>`` (unconstrained) and
``mnist1d-lipschitz-smooth-<sigma>``, sigma 0.25 and 0.5. For each case, ``--images`` test
inputs evenly spaced over the test set (digits: 450, MNIST-1D: 1000; per-input seeds from
``(seed, index)``) are certified by every certificate (``cohen``, ``lvm``, ``lipschitz`` with the
engine's global constants, ``local-margins`` with the engine's batched CROWN radius, ``dual``
where a DRS pair exists, ``best`` with its defaults) and the bench reports

* certified accuracy at radii 0, 0.25, 0.5, 0.75, 1.0 (correct and radius >= r), the average
  certified radius (ACR: wrong or abstained inputs count 0), abstention rate;
* time per image (process CPU time: the machine these figures come from is shared) and that
  time over the bare forward pass (``n0 + n`` plain batched forward passes of the model, no
  noise; median CPU time of ``--overhead-reps``); plus, per case, the
  sampling overhead of ``cohen`` against the bare forward pass, the noise alone and a minimal
  noise + forward + argmax + bincount loop, and ``cohen`` with a warm ``NoiseBank`` (what each
  input after the first costs with ``shared_noise=True``) (medians of interleaved repetitions,
  CPU time); ``cohen`` again over the same images with ``shared_noise=True``;
* per image, whether ``lipschitz``, ``local-margins`` and ``best`` certify more or less than
  ``max(cohen, lvm)``;
* an ART column (``art.estimators.certification.randomized_smoothing.
  PyTorchRandomizedSmoothing.certify``, Cohen's CERTIFY with numpy noise; a benchmark
  dependency only) on the same images, n0, n and alpha, interleaved image by image with
  lipbound's ``cohen`` (process CPU time for both): paired radius difference (mean, sd,
  paired t-test and Wilcoxon signed-rank p-values) and time ratio.

Output: JSON (``--out``), Cohen-format TSVs per (model, certificate) in ``--tsv-dir``, Markdown
tables on stdout.

    OMP_NUM_THREADS=1 nice -n 5 python experiments/bench_smoothing.py --images 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import lipbound.models as zoo
from lipbound.jsonutil import jsonable
from lipbound.smoothing import DualPair, Smooth
from lipbound.smoothing.dataset import certify_dataset, input_seed
from lipbound.smoothing.records import TsvWriter, certified_accuracy
from lipbound.smoothing.sampling import NoiseBank

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
CERTIFICATES = ("cohen", "lvm", "lipschitz", "local-margins", "dual", "best")
MODELS = ("digits-smooth-0.25", "digits-lipschitz-smooth-0.25", "mnist1d-smooth-0.25",
          "mnist1d-lipschitz-smooth-0.25", "digits-smooth-0.5", "digits-lipschitz-smooth-0.5",
          "mnist1d-smooth-0.5", "mnist1d-lipschitz-smooth-0.5")
COMPARED = ("lipschitz", "local-margins", "best")


def test_data(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if name.startswith("digits"):
        from lipbound.models.digits_smooth import digits_images
        return digits_images()[2:]
    from lipbound.models.mnist1d import mnist1d_data
    return mnist1d_data()[2:]


def build_smooth(name: str, default_sigma: float = 0.25) -> Smooth:
    """The model's ``Smooth`` at the sigma it was noise-trained at (``default_sigma`` for a
    model trained without noise, e.g. ``mnist1d-cnn``: timing cases only)."""
    info = zoo.info(name)
    sigma = float(info.extra.get("sigma", default_sigma))
    pair = None
    if name.startswith("digits-smooth-"):
        pair = DualPair(zoo.load(f"{name}-left"), zoo.load(f"{name}-right"),
                        split="checkerboard")
    return Smooth(zoo.load(name), 10, sigma, dual=pair, input_shape=info.input_shape)


def _sizes(n0: int, n: int, batch: int) -> list[int]:
    return ([min(batch, n0 - i) for i in range(0, n0, batch)]
            + [min(batch, n - i) for i in range(0, n, batch)])


def overhead(smooth: Smooth, x: torch.Tensor, n0: int, n: int, batch: int, reps: int) -> dict:
    """Medians over interleaved repetitions of: plain forward passes, the noise alone, a
    minimal Cohen loop, ``certify(certificate="cohen")`` and the same with the noise in
    1000-sample chunks (``noise_chunk=1000``: the sampler of main 240a768, before the default
    chunk grew to ``sampling.default_chunk``), in process CPU time and wall."""
    model = smooth.model
    before = Smooth(model, smooth.num_classes, smooth.sigma, dual=smooth.dual,
                    input_shape=smooth.input_shape, noise_chunk=1000)
    xb = x.unsqueeze(0).expand(batch, *x.shape).contiguous()
    sizes = _sizes(n0, n, batch)

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

    def certify_chunk1000():
        before.certify(x, n0=n0, n=n, alpha=0.001, batch_size=batch, certificate="cohen",
                       seed=0)

    bank = NoiseBank()  # as in certify_dataset(shared_noise=True) after its first input

    def certify_shared():
        smooth.certify(x, n0=n0, n=n, alpha=0.001, batch_size=batch, certificate="cohen",
                       seed=0, noise_bank=bank)

    fns = {"plain_forward": plain, "noise_only": noise, "minimal_loop": minimal,
           "certify": certify, "certify_chunk1000": certify_chunk1000,
           "certify_shared_noise": certify_shared}
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
        "samples": n0 + n, "batch_size": batch, "reps": reps,
        "median_cpu_s": med_cpu, "median_wall_s": med_wall,
        "certify_over_plain_forward": med_cpu["certify"] / med_cpu["plain_forward"],
        "certify_over_minimal_loop": med_cpu["certify"] / med_cpu["minimal_loop"],
        "certify_chunk1000_over_plain_forward":
            med_cpu["certify_chunk1000"] / med_cpu["plain_forward"],
        "certify_over_certify_chunk1000": med_cpu["certify"] / med_cpu["certify_chunk1000"],
        "noise_over_plain_forward": med_cpu["noise_only"] / med_cpu["plain_forward"],
        "certify_shared_noise_over_plain_forward":
            med_cpu["certify_shared_noise"] / med_cpu["plain_forward"],
        "wall_certify_over_plain_forward": med_wall["certify"] / med_wall["plain_forward"],
    }


def summarise(rows: list[dict]) -> dict:
    acc = certified_accuracy(rows, RADII)
    return {
        "images": len(rows),
        "certified_accuracy": {f"{r:g}": a for r, a in acc.items()},
        "acr": statistics.fmean([r["radius"] if r["correct"] else 0.0 for r in rows]),
        "abstain_rate": sum(r["predict"] < 0 for r in rows) / len(rows),
    }


def run_certificate(smooth: Smooth, cert: str, xte, yte, idx, args, tsv_path,
                    shared: bool = False) -> dict:
    counts: dict[str, dict[str, int]] = {"winners": {}, "skipped_counts": {}, "choices": {}}

    def bump(kind: str, key: str) -> None:
        counts[kind][key] = counts[kind].get(key, 0) + 1

    c0 = time.process_time()
    with TsvWriter(tsv_path) as tsv:
        recs = certify_dataset(smooth, xte, yte, indices=idx, n0=args.n0, n=args.n,
                               alpha=args.alpha, batch_size=args.batch, certificate=cert,
                               seed=args.seed, on_record=tsv.write_record,
                               shared_noise=shared)
    cpu = (time.process_time() - c0) / max(len(recs), 1)
    for r in recs:
        d = r["details"]
        if cert == "best":
            bump("winners", d.get("winner") or "abstain")
            for k in d.get("skipped", {}):
                bump("skipped_counts", k)
        if cert in ("lvm", "lipschitz") and "map" in d:
            bump("choices", f"{d['map']}@{d['t']:g}")
        if cert == "local-margins":
            bump("choices", "R>0" if d.get("R", 0) > 0 else "R=0")
    entry = {"certificate": cert, **summarise(recs),
             "time_per_image_s": cpu,
             "wall_time_per_image_s": statistics.fmean([r["time"] for r in recs]),
             "radii": [r["radius"] if r["correct"] else 0.0 for r in recs]}
    if cert == "lipschitz" and recs:
        entry["logit_difference_lipschitz_max"] = recs[0]["details"].get(
            "logit_difference_lipschitz_max")
    entry.update({k: v for k, v in counts.items() if v})
    return entry


def art_paired(smooth: Smooth, xte, yte, idx, args) -> dict:
    """ART's Cohen CERTIFY and lipbound's ``cohen`` on the same images, interleaved per image
    (process CPU time), or the reason ART cannot run."""
    try:
        from art.estimators.certification.randomized_smoothing import (
            PyTorchRandomizedSmoothing,
        )
        from scipy import stats
    except Exception as exc:  # not installed or broken
        return {"certificate": "art-cohen",
                "skipped": f"art not importable: {type(exc).__name__}: {exc}"}
    np.random.seed(args.seed)
    clf = PyTorchRandomizedSmoothing(
        model=smooth.model, loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(xte.shape[1:]), nb_classes=10, device_type="cpu",
        sample_size=args.n0, scale=smooth.sigma, alpha=args.alpha)
    ours, theirs, t_ours, t_theirs = [], [], [], []
    for x, y, i in zip(xte, yte, idx):
        c0 = time.process_time()
        c = smooth.certify(x, n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch,
                           certificate="cohen", seed=input_seed(args.seed, i))
        t_ours.append(time.process_time() - c0)
        c0 = time.process_time()
        pred, rad = clf.certify(x.unsqueeze(0).numpy(), n=args.n, batch_size=args.batch)
        t_theirs.append(time.process_time() - c0)
        ours.append({"correct": c.prediction == int(y), "radius": c.radius,
                     "predict": c.prediction})
        theirs.append({"correct": int(pred[0]) == int(y), "radius": float(rad[0]),
                       "predict": int(pred[0])})
    a = np.array([r["radius"] if r["correct"] else 0.0 for r in ours])
    b = np.array([r["radius"] if r["correct"] else 0.0 for r in theirs])
    diff = a - b
    t_p = float(stats.ttest_rel(a, b).pvalue) if np.any(diff != 0) else 1.0
    w_p = float(stats.wilcoxon(a, b).pvalue) if np.any(diff != 0) else 1.0
    ratios = [t / o for t, o in zip(t_theirs, t_ours)]
    return {"certificate": "art-cohen", **summarise(theirs),
            "time_per_image_s": statistics.fmean(t_theirs),
            "lipbound_cohen_time_per_image_s": statistics.fmean(t_ours),
            "art_over_lipbound_time_median": statistics.median(ratios),
            "paired_radius_diff": {"mean": float(diff.mean()),
                                   "sd": float(diff.std(ddof=1)) if len(diff) > 1 else 0.0,
                                   "ttest_p": t_p, "wilcoxon_p": w_p,
                                   "lipbound_acr": float(a.mean()), "art_acr": float(b.mean())},
            "options": {"library": "art", "noise": "numpy, seeded once per case",
                        "timing": "process CPU time, interleaved with lipbound cohen"}}


def comparisons(entries: dict[str, dict]) -> dict:
    """Per image: does each of COMPARED certify more than max(cohen, lvm), the same, less?"""
    if "cohen" not in entries or "lvm" not in entries:
        return {}
    base = np.maximum(entries["cohen"]["radii"], entries["lvm"]["radii"])
    out = {}
    for name in COMPARED:
        if name not in entries:
            continue
        r = np.asarray(entries[name]["radii"])
        tol = 1e-9
        out[name] = {"better": int((r > base + tol).sum()), "worse": int((r < base - tol).sum()),
                     "tie": int((abs(r - base) <= tol).sum()),
                     "mean_diff": float((r - base).mean())}
    return out


def run_case(name: str, args, tsv_dir: Path) -> dict:
    smooth = build_smooth(name, args.sigma)
    xs, ys = test_data(name)
    idx = np.unique(np.linspace(0, len(xs) - 1, args.images).round().astype(int)).tolist()
    xte, yte = xs[idx], ys[idx]
    case = {"model": name, "sigma": smooth.sigma, "images": len(idx), "indices": idx}
    fwd = overhead(smooth, xte[0], args.n0, args.n, args.batch, args.overhead_reps)
    case["overhead"] = fwd
    fwd_cpu = fwd["median_cpu_s"]["plain_forward"]
    print(f"{name} (sigma {smooth.sigma:g}, {len(idx)} images): certify "
          f"{fwd['certify_over_plain_forward']:.2f}x plain forward (CPU time), noise alone "
          f"{fwd['noise_over_plain_forward']:.2f}x; 1000-sample chunks "
          f"{fwd['certify_chunk1000_over_plain_forward']:.2f}x; shared noise "
          f"{fwd['certify_shared_noise_over_plain_forward']:.2f}x", flush=True)
    if args.overhead_only:
        return case
    entries: dict[str, dict] = {}
    for cert in args.certificates:
        if cert == "dual" and smooth.dual is None:
            continue
        e = run_certificate(smooth, cert, xte, yte, idx, args,
                            tsv_dir / f"{name}_{cert}.tsv")
        e["time_over_forward"] = e["time_per_image_s"] / fwd_cpu
        entries[cert] = e
        accs = " ".join(f"{a:.3f}" for a in e["certified_accuracy"].values())
        print(f"  {cert:14s} {accs}  ACR {e['acr']:.3f}  {e['time_per_image_s'] * 1e3:.0f} "
              f"ms/image ({e['time_over_forward']:.1f}x forward)", flush=True)
    if "cohen" in args.certificates:  # the same images with one noise set for all of them
        e = run_certificate(smooth, "cohen", xte, yte, idx, args,
                            tsv_dir / f"{name}_cohen-shared-noise.tsv", shared=True)
        e["time_over_forward"] = e["time_per_image_s"] / fwd_cpu
        entries["cohen-shared-noise"] = e
        print(f"  cohen, shared noise: ACR {e['acr']:.3f}  {e['time_per_image_s'] * 1e3:.0f} "
              f"ms/image ({e['time_over_forward']:.1f}x forward)", flush=True)
    if args.art:
        e = art_paired(smooth, xte, yte, idx, args)
        entries["art-cohen"] = e
        if "skipped" not in e:
            d = e["paired_radius_diff"]
            print(f"  art-cohen      ACR {e['acr']:.3f}; lipbound - ART {d['mean']:+.4f} "
                  f"(t-test p {d['ttest_p']:.3g}); ART/lipbound time "
                  f"{e['art_over_lipbound_time_median']:.2f}", flush=True)
    case["certificates"] = entries
    case["against_cohen_lvm"] = comparisons(entries)
    return case


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--images", type=int, default=60, help="test inputs per model")
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--certificates", nargs="+", default=list(CERTIFICATES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overhead-reps", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-art", dest="art", action="store_false")
    ap.add_argument("--overhead-only", action="store_true",
                    help="only the sampling-overhead timings (no certificates, no ART)")
    ap.add_argument("--sigma", type=float, default=0.25,
                    help="sigma for models not trained with noise (e.g. mnist1d-cnn)")
    ap.add_argument("--out", default="experiments/out/bench_smoothing.json")
    ap.add_argument("--tsv-dir", default="experiments/out/smoothing_tsv")
    ap.add_argument("--tables", metavar="JSON", nargs="+",
                    help="print the tables of earlier runs' JSON files and exit")
    args = ap.parse_args()
    if args.tables:
        cases = []
        for path in args.tables:
            with open(path) as fh:
                cases += json.load(fh)["cases"]
        print_tables(cases)
        return

    torch.set_num_threads(args.threads)
    tsv_dir = Path(args.tsv_dir)
    tsv_dir.mkdir(parents=True, exist_ok=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    cases: list[dict] = []
    for name in args.models:  # the JSON is rewritten after every case (partial runs count)
        cases.append(run_case(name, args, tsv_dir))
        doc = _document(args, cases, time.perf_counter() - t_start)
        with open(args.out, "w") as fh:
            json.dump(jsonable(doc), fh, indent=1)
    print(f"\nwrote {args.out} ({doc['total_wall_s']:.0f} s)")
    print_tables(cases)


def _document(args, cases: list[dict], wall: float) -> dict:
    return {
        "benchmark": "bench_smoothing",
        "settings": {"n0": args.n0, "n": args.n, "alpha": args.alpha, "batch_size": args.batch,
                     "images_per_model": args.images, "seed": args.seed,
                     "seeds": "lipbound.smoothing.dataset.input_seed(seed, index)",
                     "radii": list(RADII), "threads": args.threads,
                     "overhead_only": args.overhead_only},
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "total_wall_s": wall,
        "cases": cases,
    }


def print_tables(cases: list[dict]) -> None:
    print("\n| model | sigma | certificate | " + " | ".join(f"r={r:g}" for r in RADII)
          + " | ACR | abstain | ms/image | x forward |")
    print("|---|---|---|" + "---|" * len(RADII) + "---|---|---|---|")
    for c in cases:
        for name, e in c.get("certificates", {}).items():
            if "skipped" in e:
                print(f"| {c['model']} | {c['sigma']:g} | {name} | skipped: {e['skipped']} |")
                continue
            accs = " | ".join(f"{v:.3f}" for v in e["certified_accuracy"].values())
            tf = e.get("time_over_forward")
            print(f"| {c['model']} | {c['sigma']:g} | {name} | {accs} | {e['acr']:.3f} | "
                  f"{e['abstain_rate']:.3f} | {e['time_per_image_s'] * 1e3:.0f} | "
                  + (f"{tf:.1f} |" if tf is not None else "- |"))
    print("\n| model | certificate | better than max(cohen, lvm) | tie | worse | mean diff |")
    print("|---|---|---|---|---|---|")
    for c in cases:
        for name, v in c.get("against_cohen_lvm", {}).items():
            print(f"| {c['model']} | {name} | {v['better']} | {v['tie']} | {v['worse']} | "
                  f"{v['mean_diff']:+.4f} |")
    print("\n| model | images | lipbound ACR | ART ACR | mean diff | sd | t-test p | "
          "Wilcoxon p | lipbound ms | ART ms | ART / lipbound time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        e = c.get("certificates", {}).get("art-cohen")
        if not e or "skipped" in e:
            continue
        d = e["paired_radius_diff"]
        print(f"| {c['model']} | {e['images']} | {d['lipbound_acr']:.4f} | {d['art_acr']:.4f} | "
              f"{d['mean']:+.4f} | {d['sd']:.4f} | {d['ttest_p']:.3g} | {d['wilcoxon_p']:.3g} | "
              f"{e['lipbound_cohen_time_per_image_s'] * 1e3:.1f} | "
              f"{e['time_per_image_s'] * 1e3:.1f} | {e['art_over_lipbound_time_median']:.2f} |")
    print("\n| model | forward ms | noise ms | minimal loop ms | certify, 1000-sample chunks ms | "
          "certify ms | before / forward | certify / forward | certify / minimal loop | "
          "after / before | shared noise / forward |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        o, m = c["overhead"], c["overhead"]["median_cpu_s"]
        before = m.get("certify_chunk1000")
        print(f"| {c['model']} | {m['plain_forward'] * 1e3:.2f} | {m['noise_only'] * 1e3:.2f} | "
              f"{m['minimal_loop'] * 1e3:.2f} | "
              + (f"{before * 1e3:.2f} | " if before else "- | ")
              + f"{m['certify'] * 1e3:.2f} | "
              + (f"{o['certify_chunk1000_over_plain_forward']:.2f}x | " if before else "- | ")
              + f"{o['certify_over_plain_forward']:.2f}x | {o['certify_over_minimal_loop']:.2f}x | "
              + (f"{o['certify_over_certify_chunk1000']:.2f}x |" if before else "- |")
              + (f" {o['certify_shared_noise_over_plain_forward']:.2f}x |"
                 if "certify_shared_noise_over_plain_forward" in o else " - |"))


if __name__ == "__main__":
    main()
