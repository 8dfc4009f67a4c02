"""``lipbound demo``: certify a shipped model end to end and write an HTML report.

The report holds: output-bound certificates of the class margins, local Lipschitz constants
(certified upper and attained lower bound), the weight audit beside them, and a
certified-accuracy curve (CROWN output bounds and Lipschitz margins, with a PGD attack for the
gap).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from lipbound.audit import robustness, weights
from lipbound.cli import common
from lipbound.cli.bound import bound_inputs
from lipbound.cli.config import add_config_option
from lipbound.report.audit_records import robustness_records
from lipbound.report.html import write_html
from lipbound.report.output import check_writable
from lipbound.report.records import weights_record

DEMO_REPORT = "lipbound-demo-report.html"
# the certified-accuracy curve by CROWN bisection only (no BaB stage) keeps the demo short;
# its radii are a few per cent below those of `lipbound audit robustness`
DEMO_BISECTION_STEPS, DEMO_BAB_TIMEOUT = 10, 0.0


def summary(records: list[dict]) -> list[dict[str, Any]]:
    """Per input: label, prediction, certified (margin), min margin lower bound, L bounds."""
    lips = {r["input"]["index"]: r for r in records if r["kind"] == "lipschitz"}
    rows = []
    for r in records:
        if r["kind"] != "output_bounds":
            continue
        lip = lips.get(r["input"]["index"])
        lo = min(map(float, r["lower"]))
        rows.append({"index": r["input"]["index"], "label": r["input"]["label"],
                     "prediction": r["input"]["prediction"], "certified": lo > 0,
                     "min_margin_lower": lo,
                     "lipschitz_upper": float(lip["details"]["value"]) if lip else None,
                     "lipschitz_lower": float(lip["details"]["lower_value"]) if lip else None})
    return rows


def audit_records(loaded, inputs, args: argparse.Namespace, sink: common.RecordSink) -> None:
    """The weight audit and the certified-accuracy records (robustness audit; inputs with
    labels only)."""
    start = time.perf_counter()
    layers = weights(loaded.module)
    sink.add(weights_record(loaded.module, layers, model_name=loaded.name,
                            time=time.perf_counter() - start))
    if inputs.y is None:
        return
    dr = common.data_range_from(args, inputs)
    rob = robustness(
        loaded.module, inputs.X, inputs.y, eps_max=4 * args.eps, norm=args.norm,
        data_range=dr, methods=("bounds", "lipschitz"), attack=True, seed=args.seed,
        bisection_steps=DEMO_BISECTION_STEPS, bab_timeout=DEMO_BAB_TIMEOUT,
        progress=common.progress_flag(args))
    for rec in robustness_records(loaded.module, rob, inputs, norm=args.norm, data_range=dr,
                                  model_name=loaded.name, seed=args.seed):
        sink.add(rec)


def demo_records(args: argparse.Namespace, sink: common.RecordSink) -> dict[str, Any]:
    """Add all records of the demo to ``sink``; return a summary for the terminal."""
    loaded = common.model_from(args)
    inputs = common.inputs_from(args, loaded)
    bound_inputs(loaded, inputs, args, sink)
    audit_records(loaded, inputs, args, sink)
    return {"model": loaded.name, "eps": args.eps, "norm": args.norm,
            "inputs": summary(sink.records)}


def _print(out: dict[str, Any]) -> None:
    print(f"lipbound demo: {out['model']}, l_{out['norm']} ball of radius {out['eps']}")
    print(f"{'idx':>4} {'label':>5} {'pred':>4} {'certified':>9} {'margin>=':>9} "
          f"{'L upper':>8} {'L lower':>8}")
    for r in out["inputs"]:
        print(f"{r['index']:>4} {str(r['label']):>5} {str(r['prediction']):>4} "
              f"{str(r['certified']):>9} {r['min_margin_lower']:>9.4f} "
              f"{r['lipschitz_upper']:>8.3f} {r['lipschitz_lower']:>8.3f}")
    print(f"report: {out['report']}")


def run_demo(args: argparse.Namespace) -> int:
    report = check_writable(args.report)
    with common.RecordSink(args.output) as sink:
        out = demo_records(args, sink)
    write_html(sink.records, report, title=f"lipbound demo: {out['model']}")
    out["report"] = str(Path(report).resolve())
    if args.json:
        common.print_json(out)
    else:
        _print(out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="certify a shipped model end to end, write an HTML report",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_model_options(d)
    common.add_input_options(d, index="0:8")
    d.add_argument("--eps", type=float, default=0.02, help="l_inf radius (default 0.02)")
    d.add_argument("--report", default=DEMO_REPORT,
                   help=f"HTML report to write (default ./{DEMO_REPORT})")
    common.add_output_options(d)
    add_config_option(d)
    d.set_defaults(func=run_demo, norm="inf", method="crown", lipschitz_method="crown",
                   spec="margin", timeout=None, precision="float64")
