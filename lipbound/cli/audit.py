"""``lipbound audit monotonicity`` and ``lipbound audit robustness``."""

from __future__ import annotations

import argparse
import math

import torch

from lipbound import audit
from lipbound.cli import common
from lipbound.cli.config import add_config_option
from lipbound.cli.data import load_inputs, parse_indices
from lipbound.errors import InputError, ShapeError
from lipbound.executor.options import add_backend_args
from lipbound.jobs import ModelSource
from lipbound.jobs.robustness import robustness_on_executor
from lipbound.norms import parse_norm
from lipbound.report.audit_records import monotonicity_records, robustness_records


def _box(args: argparse.Namespace, loaded) -> tuple[torch.Tensor, torch.Tensor, tuple | None]:
    """(lower, upper, feature names): from --lower/--upper, else the data's per-feature range."""
    names = None
    if args.lower is not None or args.upper is not None:
        if args.lower is None or args.upper is None:
            raise InputError("give both --lower and --upper (or neither, to use the data range)")
        lo = torch.tensor(args.lower, dtype=torch.float64)
        up = torch.tensor(args.upper, dtype=torch.float64)
    else:
        # default: the training split the shipped model was fitted on
        source = args.inputs or (loaded.data and loaded.data.partition(":")[0] + ":train")
        if source is None:
            raise InputError(f"model {loaded.name} has no default data set: give --lower and "
                             "--upper, or --inputs to take the box from the data")
        data = load_inputs(source)
        X = data.X.reshape(data.X.shape[0], -1).double()
        lo, up, names = X.min(0).values, X.max(0).values, data.feature_names
    if lo.shape != up.shape:
        raise ShapeError(f"--lower has {lo.numel()} values and --upper {up.numel()}")
    if loaded.input_shape is not None and lo.numel() != math.prod(loaded.input_shape):
        raise ShapeError(f"the box has {lo.numel()} features; model {loaded.name} takes "
                         f"{math.prod(loaded.input_shape)}")
    bad = (lo > up).nonzero().flatten().tolist()
    if bad:
        j = bad[0]
        raise InputError(f"lower > upper for feature {j}: {float(lo[j])} > {float(up[j])}")
    return lo, up, names


def _features(spec: str | None, n: int) -> list[int] | None:
    if spec is None:
        return None
    try:
        return parse_indices(spec, n)
    except InputError:
        raise InputError(f"--features {spec!r}: feature indices must lie in 0..{n - 1}") from None


def run_monotonicity(args: argparse.Namespace) -> int:
    with common.RecordSink(args.output) as sink:
        loaded = common.model_from(args)
        lo, up, names = _box(args, loaded)
        feats = _features(args.features, lo.numel())
        if loaded.input_shape is not None:
            lo, up = lo.reshape(loaded.input_shape), up.reshape(loaded.input_shape)

        rep = audit.monotonicity(
            loaded.module, lo, up, features=feats, output=args.output_index,
            timeout=args.timeout, max_domains=args.max_domains, seed=args.seed,
            progress=common.progress_flag(args))
        settings = {"timeout": args.timeout, "max_domains": args.max_domains}
        for rec in monotonicity_records(loaded.module, rep, lo, up, output=args.output_index,
                                        feature_names=names, settings=settings,
                                        seed=args.seed, model_name=loaded.name):
            sink.add(rec)
    if args.json:
        common.print_json({"records": sink.records})
        return 0
    print(f"{'feature':>16} {'verdict':>13} {'d lower':>10} {'d upper':>10} {'domains':>8}")
    for r in sink.records:
        name = r["spec"].get("feature_name", str(r["spec"]["feature"]))
        print(f"{name:>16} {r['status']:>13} {float(r['lower']):>10.4g} "
              f"{float(r['upper']):>10.4g} {str(r['details'].get('domains')):>8}")
    return 0


def run_robustness(args: argparse.Namespace) -> int:
    with common.RecordSink(args.output) as sink:
        loaded = common.model_from(args)
        inputs = common.inputs_from(args, loaded)
        if inputs.y is None:
            raise InputError(f"the robustness audit needs labels: {inputs.name} has none "
                             "(give --labels FILE)")
        dr = common.data_range_from(args, inputs)
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        smooth = {"sigma": args.sigma} if args.sigma is not None else None

        def stream(one_row) -> None:  # each input's records are written as it finishes
            for rec in robustness_records(loaded.module, one_row, inputs, norm=args.norm,
                                          data_range=dr, model_name=loaded.name, seed=args.seed):
                sink.add(rec)

        rep = robustness_on_executor(
            ModelSource(args.model, args.state_dict, loaded.module), inputs, args,
            on_record=stream, progress=common.progress_flag(args),
            eps_max=args.eps_max, norm=parse_norm(args.norm), data_range=dr,
            methods=methods, smooth=smooth, attack=not args.no_attack, radii=args.radii)
    radii = args.radii or [args.eps_max * k / 4 for k in range(5)]
    curves = rep.curves(radii)
    if args.json:
        common.print_json({"radii": radii, "certified_accuracy": curves,
                           "records": sink.records})
        return 0
    print("certified accuracy at radius " + " ".join(f"{r:>8.4g}" for r in radii))
    for method, acc in curves.items():
        print(f"{method:>28} " + " ".join(f"{a:>8.3f}" for a in acc))
    return 0


def _monotonicity_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("monotonicity", help="certify the sign of d output / d feature on a box",
                       description="Per feature: 'increasing' / 'decreasing' (certified over "
                                   "the box), 'not monotone' (with a verified witness) or "
                                   "'unknown' (at the timeout).")
    common.add_model_options(m, default="diabetes-mlp")
    m.add_argument("--lower", nargs="+", type=float, help="box lower corner (one per feature)")
    m.add_argument("--upper", nargs="+", type=float, help="box upper corner (one per feature)")
    m.add_argument("--inputs", metavar="SOURCE",
                   help="data whose per-feature min/max is the box (default: the shipped "
                        "model's training split)")
    m.add_argument("--features", help="features to audit: 'all', N, N,M,... or A:B")
    m.add_argument("--output-index", type=int, default=0, help="model output to audit")
    m.add_argument("--timeout", type=float, default=30.0, help="seconds per feature")
    m.add_argument("--max-domains", type=int, default=10000, help="input splits per feature")
    common.add_output_options(m)
    add_config_option(m)
    m.set_defaults(func=run_monotonicity)


def _robustness_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("robustness", help="certified radii and accuracy curves, with attacks",
                       description="Per input, the certified radius of each method (output "
                                   "bounds with a search on eps, local-Lipschitz margins, "
                                   "randomized smoothing) and a PGD attack.")
    common.add_model_options(r)
    common.add_input_options(r, index="0:20")
    r.add_argument("--eps-max", type=float, default=0.1, help="largest radius searched")
    r.add_argument("--norm", default="inf", help="input norm: inf, 2 or 1")
    r.add_argument("--methods", default="bounds,lipschitz",
                   help="comma-separated: bounds, lipschitz, smoothing")
    r.add_argument("--sigma", type=float, default=None, help="noise level for smoothing")
    r.add_argument("--no-attack", action="store_true", help="skip the PGD attack")
    r.add_argument("--radii", nargs="+", type=float, help="radii of the accuracy table")
    add_backend_args(r)
    common.add_output_options(r)
    add_config_option(r)
    r.set_defaults(func=run_robustness)


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("audit", help="monotonicity and robustness audits")
    inner = a.add_subparsers(dest="audit_command", required=True)
    _monotonicity_parser(inner)
    _robustness_parser(inner)
