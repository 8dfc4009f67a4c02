"""Scaling of lipbound: bound time and memory versus network size, smoothing throughput versus
batch size, and local versus Ray wall time for a 200-image smoothing run.

Parts (``--parts``, default all):

* ``networks``: random ReLU MLPs (width, depth, input size sweeps; methods ``crown`` and
  ``bab`` when lipbound has it) and random CNNs and ResNets (input side 8 to 32, width,
  depth; methods ``crown`` and ``alpha-crown``): the first-call time, the median wall time
  and the peak memory of ``local_lipschitz`` and ``output_bounds``.
* ``shared`` (not in the default): the four shared nets of issue 19 (cnn_4layer, oval21
  cifar_base_kw, verivital max-pool, resnet_2b), ``local_lipschitz(method="crown")`` before
  and after the issue-19 work, alternating the code trees case by case, one fresh process
  each (see ``scaling_shared.py``; ``--before`` names the old tree; CPU only).
* ``smoothing``: images/s (and noisy samples/s) of ``Smooth.certify`` on the shipped
  ``digits-smooth-0.25`` model versus ``batch_size``.
* ``executors``: wall time of certifying ``--images`` digits test images (CertifyJob, n0 100,
  ``--n`` samples) in-process (``local``), on a 2-worker process pool and on a local Ray
  instance with 2 CPUs (Ray start-up reported separately); the records must agree exactly.

Device: ``--device cpu|cuda|auto``. On CUDA, peak memory is ``torch.cuda.max_memory_allocated``
(exact); on the CPU it is the peak rise of the bytes in use on the C heap (glibc
``mallinfo2``, which does not count memory the allocator keeps cached after a free), sampled
every millisecond (it may miss a peak shorter than that). BaB rows report ``domains_per_s``
(local Lipschitz constants; output bounds do not report a count). The GPU-versus-CPU
figures come from running the script twice, ``--device cpu`` and ``--device cuda``, into the
same ``--out``: whenever both ``scaling_cpu.json`` and ``scaling_cuda.json`` exist, the CPU/GPU
time ratios per network row and smoothing batch size go to ``scaling_gpu_cpu_ratios.json``.

Outputs: ``<out>/scaling_<device>.json`` and PNG plots ``<out>/scaling_<part>_<device>.png``.

    python experiments/scaling.py --quick --parts networks  # a few minutes on 2 cores
    python experiments/scaling.py --parts shared --repeats 1
    python experiments/scaling.py --device cuda --parts networks smoothing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lipbound  # noqa: E402
from lipbound.errors import UnknownMethodError  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


# ------------------------------------------------------------------------- measuring


class _HeapPeak:
    """Peak bytes in use on the C heap (glibc ``mallinfo2``: arena plus mmapped blocks in use,
    so memory that the allocator keeps cached after a free does not count) while active,
    sampled every millisecond; the resident set size where ``mallinfo2`` is missing."""

    def __init__(self) -> None:
        self._used = _heap_in_use_fn()
        self.peak = self.base = self._used()
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._used())

    def __enter__(self) -> _HeapPeak:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._used())


def _heap_in_use_fn() -> Callable[[], int]:
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks",
                                                    "hblkhd", "usmblks", "fsmblks", "uordblks",
                                                    "fordblks", "keepcost")]

    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
        fn.restype = MallInfo2
    except (OSError, AttributeError):
        page = os.sysconf("SC_PAGE_SIZE")

        def rss() -> int:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * page

        return rss

    def used() -> int:
        info = fn()
        return info.uordblks + info.hblkhd

    return used


def measure(fn: Callable[[], Any], device: torch.device, repeats: int) -> dict[str, float]:
    """First-call time, median time of ``repeats`` further calls, peak extra memory (MiB);
    BaB domains per second of the last call when its result reports them."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times, peak, res = [], 0.0, None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            res = fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            peak = max(peak, (torch.cuda.max_memory_allocated() - base) / 2**20)
        else:
            with _HeapPeak() as mem:
                t0 = time.perf_counter()
                res = fn()
                times.append(time.perf_counter() - t0)
            peak = max(peak, (mem.peak - mem.base) / 2**20)
    return {"time_first": first, "time_median": statistics.median(times), "peak_mib": peak,
            **domain_rate(res, times[-1])}


# ------------------------------------------------------------------------- networks


def random_mlp(in_dim: int, width: int, depth: int, out: int = 10, seed: int = 0) -> nn.Module:
    """``depth`` hidden ReLU layers of ``width`` units (Kaiming-uniform weights, fixed seed)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, out))
    return nn.Sequential(*layers).eval()


def random_cnn(side: int, channels: int = 8, convs: int = 2, seed: int = 0) -> nn.Module:
    """``convs`` 3x3 stride-2 conv + ReLU layers on a 1 x side x side image, then a linear head."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    c, s = 1, side
    for _ in range(convs):
        layers += [nn.Conv2d(c, channels, 3, stride=2, padding=1), nn.ReLU()]
        c, s = channels, (s + 1) // 2
    layers += [nn.Flatten(), nn.Linear(c * s * s, 10)]
    return nn.Sequential(*layers).eval()


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.c2(torch.relu(self.c1(x))))


def random_resnet(side: int, width: int = 8, blocks: int = 1, seed: int = 0) -> nn.Module:
    """A stride-2 conv stem on a 3 x side x side image, ``blocks`` residual blocks (two 3x3
    convs and a skip), a stride-2 conv, then a linear head."""
    torch.manual_seed(seed)
    s = (side + 1) // 2
    s2 = (s + 1) // 2
    return nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(),
                         *[_Block(width) for _ in range(blocks)],
                         nn.Conv2d(width, width, 3, 2, 1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(width * s2 * s2, 10)).eval()


def conv_cases(quick: bool) -> list[dict[str, Any]]:
    """CNN and ResNet sweeps: input side (8 to 32), width (channels) and depth."""
    sides = [8, 16, 32] if quick else [8, 16, 24, 32]
    widths = [4, 8, 16] if quick else [4, 8, 16, 32]
    depths = [1, 2, 3] if quick else [1, 2, 3, 4]
    cases = [dict(sweep="cnn_side", x=s, make=lambda s=s: random_cnn(s), shape=(1, s, s))
             for s in sides]
    cases += [dict(sweep="cnn_width", x=w, make=lambda w=w: random_cnn(16, w), shape=(1, 16, 16))
              for w in widths]
    cases += [dict(sweep="cnn_depth", x=d, make=lambda d=d: random_cnn(32, 8, d),
                   shape=(1, 32, 32)) for d in depths]
    cases += [dict(sweep="resnet_side", x=s, make=lambda s=s: random_resnet(s), shape=(3, s, s))
              for s in sides]
    cases += [dict(sweep="resnet_width", x=w, make=lambda w=w: random_resnet(16, w),
                   shape=(3, 16, 16)) for w in widths]
    cases += [dict(sweep="resnet_depth", x=d, make=lambda d=d: random_resnet(16, 8, d),
                   shape=(3, 16, 16)) for d in depths]
    # --quick: alpha-CROWN only on the 8x8 nets of the side sweeps (it dominates the time:
    # local_lipschitz with alpha-crown took 164 s on the one-conv 32x32 CNN, crown 0.16 s,
    # before h-alpha; now about 20x crown, experiments/README.md)
    return [dict(c, methods=CONV_METHODS if not quick or (c["sweep"].endswith("side")
                                                          and c["x"] == sides[0])
                 else CONV_METHODS[:1]) for c in cases]


#: bound methods of the CNN / ResNet sweeps
CONV_METHODS = ["crown", "alpha-crown"]


def network_cases(quick: bool) -> list[dict[str, Any]]:
    """(sweep, x value, model factory, input shape) of the network sweeps."""
    widths = [16, 32, 64, 128] if quick else [16, 32, 64, 128, 256, 512]
    depths = [1, 2, 4, 6] if quick else [1, 2, 4, 6, 8, 12]
    inputs = [16, 64, 256] if quick else [16, 64, 256, 1024, 4096]
    cases = [dict(sweep="mlp_width", x=w, make=lambda w=w: random_mlp(64, w, 3), shape=(64,))
             for w in widths]
    cases += [dict(sweep="mlp_depth", x=d, make=lambda d=d: random_mlp(64, 64, d), shape=(64,))
              for d in depths]
    cases += [dict(sweep="mlp_input", x=n, make=lambda n=n: random_mlp(n, 64, 3), shape=(n,))
              for n in inputs]
    return cases + conv_cases(quick)


def bound_calls(model: nn.Module, x: torch.Tensor, method: str, eps: float,
                timeout: float) -> dict[str, Callable[[], Any]]:
    kw: dict[str, Any] = {"timeout": timeout, "progress": False} if method == "bab" else {}
    return {
        "local_lipschitz": lambda: lipbound.local_lipschitz(model, x, eps, method=method,
                                                            n_samples=1, **kw),
        "output_bounds": lambda: lipbound.output_bounds(model, x, eps, method=method, **kw),
    }


def domain_rate(result: Any, seconds: float) -> dict[str, float]:
    """BaB domains bounded and domains per second of a ``LipschitzResult`` (when reported)."""
    n = (getattr(result, "details", None) or {}).get("domains_bounded")
    return {} if n is None else {"domains": n, "domains_per_s": n / seconds}


def run_networks(device: torch.device, quick: bool, repeats: int, methods: list[str],
                 eps: float, bab_timeout: float, sweeps: list[str] | None = None
                 ) -> list[dict[str, Any]]:
    rows = []
    for case in network_cases(quick):
        if sweeps and not any(case["sweep"].startswith(s) for s in sweeps):
            continue
        model = case["make"]().to(device)
        x = torch.rand(case["shape"], generator=torch.Generator().manual_seed(1)).to(device)
        params = sum(p.numel() for p in model.parameters())
        for method in case.get("methods", methods):
            for what, call in bound_calls(model, x, method, eps, bab_timeout).items():
                row = {"sweep": case["sweep"], "x": case["x"], "params": params,
                       "method": method, "call": what}
                try:
                    row.update(measure(call, device, repeats))
                except UnknownMethodError as exc:
                    row["unavailable"] = str(exc)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


# ------------------------------------------------------------------------- smoothing


def digits_items(count: int) -> list[tuple[torch.Tensor, int]]:
    from lipbound.models.digits_smooth import digits_images

    _, _, X, y = digits_images()
    return [(X[i], int(y[i])) for i in range(count)]


def run_smoothing(device: torch.device, quick: bool, n: int, images: int) -> list[dict]:
    model = lipbound.models.load("digits-smooth-0.25", device=device)
    smooth = lipbound.Smooth(model, 10, 0.25)
    items = digits_items(images)
    smooth.certify(items[0][0], n0=100, n=1000, seed=0)  # warm-up
    rows = []
    for bs in ([100, 1000, 10000] if quick else [100, 300, 1000, 3000, 10000, 30000]):
        t0 = time.perf_counter()
        for i, (x, _) in enumerate(items):
            smooth.certify(x.to(device), n0=100, n=n, batch_size=bs, seed=i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        row = {"batch_size": bs, "images": images, "n": n, "seconds": dt,
               "images_per_s": images / dt, "samples_per_s": images * (n + 100) / dt}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# ------------------------------------------------------------------------- executors


def _timed_map(ex: Any, job: Any, items: list, seed: int) -> tuple[float, list]:
    from lipbound.executor import in_order

    t0 = time.perf_counter()
    recs = in_order(ex.map(job, items, seed=seed))
    return time.perf_counter() - t0, recs


def run_executors(images: int, n: int, cpus: int) -> dict[str, Any]:
    """Wall time of the same smoothing run on each backend; records must agree exactly.
    ``load`` holds the 1-minute load average before each run (the machine may be shared)."""
    from lipbound.executor import LocalExecutor, ProcessExecutor
    from lipbound.jobs import CertifyJob

    job = CertifyJob("digits-smooth-0.25", 0.25, n0=100, n=n, batch_size=1000, device="cpu")
    items = digits_items(images)
    threads = torch.get_num_threads()
    out: dict[str, Any] = {"images": images, "n": n, "cpus": cpus, "local_threads": threads,
                           "load": {}}

    def run(name: str, ex: Any, seed: int = 0) -> list:
        out["load"][name] = os.getloadavg()[0]
        out[f"{name}_s"], recs = _timed_map(ex, job, items, seed)
        print(json.dumps({f"{name}_s": out[f"{name}_s"], "load": out["load"][name]}),
              flush=True)
        return recs

    ref = run("local", LocalExecutor())
    if threads > 1:  # small models on a shared machine: one thread is often much faster
        torch.set_num_threads(1)
        out["local_1thread_same_records"] = _same(run("local_1thread", LocalExecutor()), ref)
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    with ProcessExecutor(workers=cpus) as pool:
        out["process_same_records"] = _same(run("process", pool), ref)
    out["process_total_s"] = time.perf_counter() - t0
    try:
        from lipbound.executor import RayExecutor

        t0 = time.perf_counter()
        with RayExecutor(num_cpus=cpus) as ray_ex:
            out["ray_start_s"] = time.perf_counter() - t0
            out["ray_same_records"] = _same(run("ray", ray_ex), ref)
            run("ray_second_run", ray_ex, seed=1)  # workers warm
            with RayExecutor(mode="actors") as actors:  # joins the instance
                out["ray_actors_same_records"] = _same(run("ray_actors", actors), ref)
                run("ray_actors_second_run", actors, seed=1)  # the same actors
    except lipbound.InputError as exc:
        out["ray_unavailable"] = str(exc)
    return out


def _same(recs: list, ref: list) -> bool:
    def strip(d: Any) -> Any:
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items() if k != "time"}
        return d

    return [strip(r.to_dict()) for r in recs] == [strip(r.to_dict()) for r in ref]


# ------------------------------------------------------------------------- plots


def plot_networks(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = list(dict.fromkeys(r["sweep"] for r in rows))
    fig, axes = plt.subplots(3, len(sweeps), figsize=(4 * len(sweeps), 9.5), squeeze=False)
    for j, sweep in enumerate(sweeps):
        for key in {(r["method"], r["call"]) for r in rows if r["sweep"] == sweep}:
            pts = [r for r in rows if r["sweep"] == sweep and (r["method"], r["call"]) == key
                   and "time_median" in r]
            if not pts:
                continue
            xs = [r["x"] for r in pts]
            label = f"{key[1]} ({key[0]})"
            axes[0][j].plot(xs, [r["time_median"] for r in pts], "o-", label=label)
            axes[1][j].plot(xs, [r["peak_mib"] for r in pts], "o-", label=label)
            rate = [r for r in pts if "domains_per_s" in r]
            if rate:
                axes[2][j].plot([r["x"] for r in rate], [r["domains_per_s"] for r in rate],
                                "o-", label=label)
        axes[0][j].set_title(sweep)
        axes[0][j].set_yscale("log")
        axes[2][j].set_xlabel(sweep.split("_")[1])
        for i in range(3):
            axes[i][j].set_xscale("log", base=2)
    axes[0][0].set_ylabel("median time (s)")
    axes[1][0].set_ylabel("peak extra memory (MiB)")
    axes[2][0].set_ylabel("BaB domains / s")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_smoothing(rows: list[dict], path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["batch_size"] for r in rows], [r["images_per_s"] for r in rows], "o-")
    ax.set_xscale("log")
    ax.set_xlabel("batch size (noisy samples per forward pass)")
    ax.set_ylabel(f"images / s (n = {rows[0]['n']})")
    ax.set_title(f"smoothing throughput, digits-smooth-0.25, {device}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_executors(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"local\n({res['local_threads']} torch thr.)"]
    values = [res["local_s"]]
    if "local_1thread_s" in res:
        labels.append("local\n(1 torch thr.)")
        values.append(res["local_1thread_s"])
    labels.append(f"process pool\n({res['cpus']} workers)")
    values.append(res["process_total_s"])
    if "ray_s" in res:
        labels += [f"Ray ({res['cpus']} CPUs)\nincl. start-up", "Ray tasks\nwarm workers"]
        values += [res["ray_start_s"] + res["ray_s"], res["ray_second_run_s"]]
    if "ray_actors_s" in res:
        labels += ["Ray actors\nincl. start", "Ray actors\nwarm"]
        values += [res["ray_actors_s"], res["ray_actors_second_run_s"]]
    fig, ax = plt.subplots(figsize=(9.5, 3.8))
    ax.bar(labels, values, color=["#4c72b0", "#64b5cd", "#55a868", "#c44e52", "#dd8452",
                                  "#8172b3", "#937860"][:len(values)])
    for k, v in enumerate(values):
        ax.text(k, v, f"{v:.0f} s", ha="center", va="bottom")
    ax.set_ylabel("wall time (s)")
    ax.set_title(f"{res['images']} digits, smoothing n = {res['n']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------- main


def bab_available() -> bool:
    try:
        lipbound.local_lipschitz(random_mlp(2, 2, 1), torch.zeros(2), 0.1, method="bab",
                                 timeout=1.0, n_samples=1)
        return True
    except UnknownMethodError:
        return False


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--parts", nargs="+", default=["networks", "smoothing", "executors"],
                    choices=["networks", "smoothing", "executors", "shared"])
    ap.add_argument("--before", type=Path, default=Path("/work/wt-before"),
                    help="code tree of the 'before' column of --parts shared")
    ap.add_argument("--sweeps", nargs="+", default=None,
                    help="only the network sweeps whose name starts so (e.g. cnn resnet)")
    ap.add_argument("--quick", action="store_true", help="fewer sizes (minutes on 2 cores)")
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (--quick: 1)")
    ap.add_argument("--eps", type=float, default=0.01)
    ap.add_argument("--bab-timeout", type=float, default=10.0)
    ap.add_argument("--n", type=int, default=10_000, help="smoothing samples per image")
    ap.add_argument("--smoothing-images", type=int, default=20)
    ap.add_argument("--images", type=int, default=200, help="images of the executor run")
    ap.add_argument("--cpus", type=int, default=2, help="workers / Ray CPUs (executor run)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = device.type
    meta = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "load_average": os.getloadavg(), "quick": args.quick,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    result: dict[str, Any] = {"meta": meta}
    path = out / f"scaling_{tag}.json"
    if "networks" in args.parts:
        mlp = not args.sweeps or any(s.startswith("mlp") for s in args.sweeps)
        methods = ["crown"] + (["bab"] if mlp and bab_available() else [])
        meta["methods"] = methods
        result["networks"] = run_networks(device, args.quick, args.repeats, methods, args.eps,
                                          args.bab_timeout, args.sweeps)
        plot_networks(result["networks"], out / f"scaling_networks_{tag}.png")
    if "smoothing" in args.parts:
        result["smoothing"] = run_smoothing(device, args.quick, args.n, args.smoothing_images)
        plot_smoothing(result["smoothing"], out / f"scaling_smoothing_{tag}.png", str(device))
    if "executors" in args.parts:
        result["executors"] = run_executors(args.images, args.n, args.cpus)
        plot_executors(result["executors"], out / "scaling_executors.png")
    if "shared" in args.parts:
        from scaling_shared import run_shared, table

        result["shared"] = run_shared(args.before, args.repeats, args.quick)
        print(table(result["shared"]))
    meta["load_average_end"] = os.getloadavg()
    if path.exists():  # keep the parts this run did not redo
        result = {**json.loads(path.read_text()), **result}
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}", file=sys.stderr)
    gpu_cpu_ratios(out)


def gpu_cpu_ratios(out: Path) -> dict[str, Any] | None:
    """CPU time / GPU time per network row and smoothing batch size, when both
    ``scaling_cpu.json`` and ``scaling_cuda.json`` exist in ``out`` (written to
    ``scaling_gpu_cpu_ratios.json``)."""
    cpu, gpu = out / "scaling_cpu.json", out / "scaling_cuda.json"
    if not (cpu.exists() and gpu.exists()):
        return None
    c, g = json.loads(cpu.read_text()), json.loads(gpu.read_text())

    def by_key(rows: list[dict], key: tuple[str, ...]) -> dict[tuple, dict]:
        return {tuple(r[k] for k in key): r for r in rows}

    ratios: dict[str, Any] = {"networks": [], "smoothing": []}
    key = ("sweep", "x", "method", "call")
    gn = by_key(g.get("networks", []), key)
    for k, r in by_key(c.get("networks", []), key).items():
        if k in gn and "time_median" in r and "time_median" in gn[k]:
            ratios["networks"].append(dict(zip(key, k), cpu_over_gpu=r["time_median"]
                                           / gn[k]["time_median"]))
    gs = by_key(g.get("smoothing", []), ("batch_size",))
    for k, r in by_key(c.get("smoothing", []), ("batch_size",)).items():
        if k in gs:
            ratios["smoothing"].append({"batch_size": k[0], "gpu_over_cpu_images_per_s":
                                        gs[k]["images_per_s"] / r["images_per_s"]})
    vals = [r["cpu_over_gpu"] for r in ratios["networks"]]
    if vals:
        ratios["networks_median_cpu_over_gpu"] = statistics.median(vals)
    (out / "scaling_gpu_cpu_ratios.json").write_text(json.dumps(ratios, indent=1))
    print(json.dumps({k: v for k, v in ratios.items() if "median" in k}), file=sys.stderr)
    return ratios


if __name__ == "__main__":
    main()
