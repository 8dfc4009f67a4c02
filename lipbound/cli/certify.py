"""``lipbound certify``: randomized-smoothing certificates over a data set.

    lipbound certify --model digits-smooth-0.25 --data digits --indices 0:50 \\
        --n 10000 --certificate cohen --tsv out.tsv --json out.json

Writes Cohen et al.'s TSV (``idx label predict radius correct time``; their analysis scripts
read it) streamed line by line, and at the end lipbound's JSON document (``lipbound.smoothing/1``:
the run's settings and one bound-report ``smoothing`` record per input, with every
certificate's details and the per-input seed), so ``lipbound report OUT.json`` renders it.
Each input's seed is derived from ``--seed`` and its row number, so a sub-range reproduces the
same records as a full run. ``--shared-noise`` certifies every input with the noise of
``--seed`` itself, drawn once (faster on small models; each certificate keeps its guarantee,
but the certificates of different inputs are correlated: see
``lipbound.smoothing.dataset``).
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from lipbound import models
from lipbound.cli.common import fitted
from lipbound.cli.data import load_inputs, select
from lipbound.errors import InputError
from lipbound.executor.options import add_backend_args
from lipbound.io.model_source import SOURCES_HELP, LoadedModel, load_model
from lipbound.jobs.certify import CertifyJob, certify_on_executor
from lipbound.jsonutil import jsonable
from lipbound.report.output import check_writable, write_atomic
from lipbound.smoothing import DualPair, Smooth
from lipbound.smoothing.certificates import NAMES
from lipbound.smoothing.dataset import certify_dataset
from lipbound.smoothing.records import FORMAT, TsvWriter, certified_accuracy

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


def _registry_extra(loaded: LoadedModel) -> dict:
    if loaded.source != "registry":
        return {}
    return dict(models.info(loaded.name).extra)


def _sigma(args: argparse.Namespace, extra: dict) -> float:
    if args.sigma is not None:
        return args.sigma
    if extra.get("sigma") is not None:
        return float(extra["sigma"])
    raise InputError("give the noise level with --sigma (the model does not record one)")


def _dual(args: argparse.Namespace, loaded: LoadedModel) -> DualPair | None:
    """The DRS pair: ``--dual LEFT RIGHT``, else a registry model's ``-left``/``-right``."""
    if args.dual:
        left, right = (load_model(s).module for s in args.dual)
        return DualPair(left, right, split=args.dual_split)
    if loaded.source == "registry":
        names = [f"{loaded.name}-left", f"{loaded.name}-right"]
        if all(nm in models.available() for nm in names):
            split = models.info(names[0]).extra.get("dual_split") or args.dual_split
            return DualPair(models.load(names[0]), models.load(names[1]), split=split)
    return None


def _num_classes(model: torch.nn.Module, x: torch.Tensor) -> int:
    param = next(iter(model.parameters()), None)
    with torch.no_grad():
        out = model(x[:1] if param is None else x[:1].to(param.dtype))
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise InputError("the model must map [B, *in] to class scores [B, K]")
    return int(out.shape[1])


def _options(args: argparse.Namespace) -> dict:
    opts: dict = {}
    if args.radius_fn is not None:
        opts["radius_fn"] = args.radius_fn
    if args.n_local is not None:
        opts["n_local"] = args.n_local
    if args.lipschitz_constant is not None:
        text = args.lipschitz_constant
        if text in ("naive", "lipsdp"):
            opts["lipschitz_constant"] = text
        else:
            try:
                opts["lipschitz_constant"] = float(text)
            except ValueError:
                raise InputError(f"--lipschitz-constant: a number, 'naive' or 'lipsdp', got "
                                 f"{text!r}") from None
    return opts


def _progress(flag: bool | None) -> bool | str:
    return "auto" if flag is None else flag


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, args.state_dict)
    extra = _registry_extra(loaded)
    sigma = _sigma(args, extra)
    source = args.inputs or loaded.data
    if source is None:
        raise InputError(f"model {loaded.name} has no default data set; give --data")
    inputs = fitted(select(load_inputs(source, args.labels), args.indices), loaded)
    for path in (args.tsv, args.json):
        if path:
            check_writable(path)  # before any work
    k = _num_classes(loaded.module, inputs.X)
    dual = _dual(args, loaded)
    input_shape = tuple(inputs.X.shape[1:])
    smooth = Smooth(loaded.module, k, sigma, dual=dual, input_shape=input_shape)
    tsv = _LazyTsv(args.tsv) if args.tsv else None
    try:
        if args.backend == "local":
            records = certify_dataset(
                smooth, inputs.X, inputs.y, indices=inputs.indices, n0=args.n0, n=args.n,
                alpha=args.alpha, batch_size=args.batch_size, certificate=args.certificate,
                seed=args.seed, progress=_progress(args.progress),
                on_record=tsv.write_record if tsv else None, model_name=loaded.name,
                shared_noise=args.shared_noise, **_options(args))
        else:
            job = CertifyJob(loaded.module, sigma, k, n0=args.n0, n=args.n, alpha=args.alpha,
                             batch_size=args.batch_size, certificate=args.certificate,
                             dual=dual, input_shape=input_shape, base_seed=args.seed,
                             model_name=loaded.name, device="cpu", options=_options(args),
                             shared_noise=args.shared_noise)
            records = certify_on_executor(job, inputs, args, tsv.write_record if tsv else None,
                                          _progress(args.progress))
    finally:
        if tsv is not None:
            tsv.close()
    meta = {"model": loaded.name, "data": inputs.name, "sigma": sigma, "n0": args.n0,
            "n": args.n, "alpha": args.alpha, "certificate": args.certificate,
            "batch_size": args.batch_size, "seed": args.seed, "num_classes": k,
            "shared_noise": args.shared_noise}
    if args.json:
        doc = {"format": FORMAT, "meta": jsonable(meta), "records": jsonable(records)}
        write_atomic(args.json, json.dumps(doc, indent=1, allow_nan=False))  # all or nothing
    _summary(records, meta)
    return 0


class _LazyTsv:
    """A TsvWriter opened at the first record, so a run that fails before any result leaves
    no file (finished lines of a run stopped later stay: each is a complete record)."""

    def __init__(self, path: str) -> None:
        self.path, self._writer = path, None

    def write_record(self, rec: dict) -> None:
        if self._writer is None:
            self._writer = TsvWriter(self.path)
        self._writer.write_record(rec)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _summary(records: list[dict], meta: dict) -> None:
    rows = [{"correct": bool(r["correct"]), "radius": r["radius"]} for r in records]
    labelled = all(r["label"] is not None for r in records)
    print(f"certified {len(records)} inputs of {meta['data']} with {meta['model']} "
          f"(sigma {meta['sigma']:g}, n {meta['n']}, alpha {meta['alpha']:g}, "
          f"{meta['certificate']})")
    abstain = sum(r["predict"] < 0 for r in records)
    print(f"abstained: {abstain}; mean time per input: "
          f"{sum(r['time'] for r in records) / max(len(records), 1):.3f} s")
    if labelled:
        acc = certified_accuracy(rows, RADII)
        print("certified accuracy: " + ", ".join(f"r={r:g}: {a:.3f}" for r, a in acc.items()))


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certify", help="randomized-smoothing certificates over a data set",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help=f"base classifier: {SOURCES_HELP}")
    p.add_argument("--state-dict", metavar="FILE", help="weights for a module:factory model")
    p.add_argument("--data", "--inputs", dest="inputs", metavar="SOURCE",
                   help="digits (test split), digits:train, another data set, or a "
                        ".npy/.npz/.pt file [N, *in]; default: the model's data set")
    p.add_argument("--labels", metavar="FILE", help="labels (.npy/.pt) for a file of inputs")
    p.add_argument("--indices", "--index", dest="indices", default="all",
                   help="rows: 'all' (default), N, N,M,... or A:B")
    p.add_argument("--sigma", type=_positive_float,
                   help="noise level (default: the one a shipped model was trained with)")
    p.add_argument("--n0", type=int, default=100, help="selection samples (default 100)")
    p.add_argument("--n", type=int, default=100_000, help="estimation samples (default 1e5)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability per input")
    p.add_argument("--certificate", default="cohen", choices=list(NAMES))
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="base seed (per input: seed and row)")
    p.add_argument("--shared-noise", action="store_true",
                   help="the same noise (that of --seed) for every input, drawn once: faster "
                        "on small models; certificates of different inputs are correlated")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest for small "
                   "models on a busy machine)")
    p.add_argument("--radius-fn", choices=["auto", "global-lipschitz", "local-lipschitz",
                                           "output-bounds"],
                   help="base-classifier radii for local-margins (and best)")
    p.add_argument("--n-local", type=int, help="estimation samples with radius calls "
                   "(local-margins)")
    p.add_argument("--lipschitz-constant", metavar="L|naive|lipsdp",
                   help="constant of the logit differences for the lipschitz certificate")
    p.add_argument("--dual", nargs=2, metavar=("LEFT", "RIGHT"),
                   help="DRS half-resolution models (default for digits-smooth-*: shipped)")
    p.add_argument("--dual-split", default="checkerboard", choices=["checkerboard", "columns"])
    p.add_argument("--tsv", metavar="OUT", help="Cohen-format TSV, one line per input")
    p.add_argument("--json", metavar="OUT", help="lipbound JSON records")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    add_backend_args(p)
    p.set_defaults(func=run)
