"""``lipbound bound``: output bounds and local Lipschitz constants of any model, any inputs."""

from __future__ import annotations

import argparse

from lipbound.cli import common
from lipbound.cli.config import add_config_option
from lipbound.cli.data import Inputs
from lipbound.errors import LipboundError
from lipbound.executor.options import add_backend_args, executor_from_args, map_options
from lipbound.inputs import PRECISIONS, check_eps, check_precision, check_timeout
from lipbound.io.model_source import LoadedModel
from lipbound.jobs import BoundJob, ModelSource
from lipbound.norms import parse_norm
from lipbound.progress import bar


def bound_inputs(loaded: LoadedModel, inputs: Inputs, args: argparse.Namespace,
                 sink: common.RecordSink) -> None:
    """Output bounds (and local Lipschitz constants) of every selected input, as records.

    Inputs run on the executor of ``--backend`` (default: in this process); each input's seed
    derives from ``--seed`` and its row number. Records stream to the sink as inputs finish;
    inputs that failed or timed out are reported together at the end (a lipbound error)."""
    # eps and timeout are checked (as the API checks them) once here, before any input runs
    job = BoundJob(ModelSource(args.model, args.state_dict, loaded.module), check_eps(args.eps),
                   norm=parse_norm(args.norm), method=args.lipschitz_method, spec=args.spec,
                   data_range=common.data_range_from(args, inputs),
                   timeout=check_timeout(args.timeout),
                   output_bounds=True, bounds_method=args.method, device="cpu",
                   precision=_precision(args.precision))
    rows = range(inputs.X.shape[0])
    items = [(inputs.X[i], common.label_of(inputs, i), common.source_index(inputs, i))
             for i in rows]
    failed = []
    with executor_from_args(args) as ex:
        runs = ex.map(job, items, seed=args.seed, keys=[it[2] for it in items],
                      **map_options(args))
        for rec in bar(runs, progress=common.progress_flag(args), total=len(items),
                       desc="bound", unit="input"):
            if rec.status != "ok":
                failed.append(f"input {items[rec.index][2]}: {rec.status}: {rec.error}")
                continue
            x, label, index = items[rec.index]
            meta = {"index": index, "label": label, "prediction": rec.result["prediction"],
                    "source": inputs.name}
            for r in job.records(loaded.module, x, rec.result, model_name=loaded.name,
                                 input=meta):
                sink.add(r)
    if failed:
        raise LipboundError(f"{len(failed)} of {len(items)} inputs failed: " + "; ".join(failed))


def _precision(precision: str) -> str:
    """``precision`` once checked as the API checks it (before any input runs)."""
    check_precision(precision)
    return precision


def _print_table(records: list[dict]) -> None:
    lips = {r["input"]["index"]: r for r in records if r["kind"] == "lipschitz"}
    print(f"{'idx':>5} {'label':>5} {'pred':>4} {'min lower':>10} {'max upper':>10} "
          f"{'certified':>9} {'L upper':>9} {'L lower':>9}")
    for r in (r for r in records if r["kind"] == "output_bounds"):
        inp = r["input"]
        lo = min(map(float, r["lower"]))
        up = max(map(float, r["upper"]))
        cert = str(lo > 0) if r["spec"].get("type") == "margin" else "-"
        lip = lips.get(inp["index"])
        lu = f"{float(lip['details']['value']):9.4g}" if lip else f"{'-':>9}"
        ll = f"{float(lip['details']['lower_value']):9.4g}" if lip else f"{'-':>9}"
        print(f"{inp['index']:>5} {str(inp['label']):>5} {str(inp['prediction']):>4} "
              f"{lo:>10.4g} {up:>10.4g} {cert:>9} {lu} {ll}")


def run_bound(args: argparse.Namespace) -> int:
    with common.RecordSink(args.output) as sink:
        loaded = common.model_from(args)
        inputs = common.inputs_from(args, loaded)
        bound_inputs(loaded, inputs, args, sink)
    if args.json:
        common.print_json({"records": sink.records})
    else:
        _print_table(sink.records)
    return 0


def add_bound_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eps", type=float, default=0.02, help="radius of the input ball")
    p.add_argument("--norm", default="inf", help="input norm: inf, 2 or 1 (default inf)")
    p.add_argument("--method", default="crown",
                   help="output-bound method: ibp, crown, alpha-crown (bab where available)")
    p.add_argument("--lipschitz-method", default="crown",
                   help="local Lipschitz method: naive, ibp, crown, alpha-crown (bab where "
                        "available), or none to skip")
    p.add_argument("--spec", default="identity", choices=["identity", "margin"],
                   help="identity: bound every output; margin: f_label - f_j for j != label "
                        "(label from --labels / the data set, else the prediction)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per input for the Lipschitz bound (branch-and-bound)")
    p.add_argument("--precision", default="float64", choices=sorted(PRECISIONS),
                   help="dtype of CROWN's backward coefficients: float64, or float32 (faster "
                        "on a GPU; a proven rounding allowance per step keeps it sound)")


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bound", help="output bounds and local Lipschitz constants of any model",
                       description="Certified output bounds and local Lipschitz constants "
                                   "over a norm ball around each selected input.")
    common.add_model_options(b)
    common.add_input_options(b)
    add_bound_options(b)
    common.add_output_options(b)
    add_backend_args(b)
    add_config_option(b)
    b.set_defaults(func=run_bound)
