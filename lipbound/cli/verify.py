"""``lipbound verify`` and ``lipbound verify-instances``: VNN-COMP style verification.

``lipbound verify MODEL.onnx PROP.vnnlib --timeout T [--json] [--counterexample OUT]`` prints the
verdict (unsat / sat / timeout / unknown) and the time; with ``--counterexample OUT`` it writes
the VNN-COMP result file (the verdict, and for "sat" the counterexample) to OUT.

``lipbound verify-instances DIR_OR_CSV [--out results.csv] [--timeout-scale S] [--limit N]`` runs
every row of a VNN-COMP ``instances.csv`` (or the single ``*instances.csv`` in DIR): relative
paths are resolved against the CSV's folder, ``X.gz`` is used when only the compressed file
exists, each row gets ``S * timeout`` seconds. Rows are appended to the results CSV as they
finish (see :mod:`lipbound.report.verdicts`); a row whose files are missing or that raises a
lipbound error is recorded as "error" (or skipped with ``--skip-missing`` when files are missing).
Counterexamples go to ``<out stem>_counterexamples/<onnx stem>__<vnnlib stem>.txt``.

Exit codes:
  verify:            0 decided (unsat or sat), 3 undecided (timeout or unknown)
  verify-instances:  0 every row ran, 3 some rows were recorded as "error"
  both:              2 invalid input or unsupported model (lipbound error), 1 unexpected error
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lipbound.errors import InputError, LipboundError
from lipbound.io import read_instances, read_vnnlib
from lipbound.report.output import check_writable
from lipbound.report.verdicts import ResultRow, append_result, write_result_file
from lipbound.verify import verify

EXIT_DECIDED, EXIT_UNDECIDED, EXIT_ROW_ERRORS = 0, 3, 3


def _verify(args: argparse.Namespace) -> int:
    if args.counterexample:
        check_writable(args.counterexample)  # before the run, not after it
    result = verify(args.model, read_vnnlib(args.property), args.timeout, seed=args.seed,
                    progress="auto" if args.progress else False)
    if args.counterexample:
        write_result_file(args.counterexample, result.verdict, result.counterexample)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"{result.verdict} {result.time:.3f}")
    return EXIT_DECIDED if result.verdict in ("unsat", "sat") else EXIT_UNDECIDED


def find_instances_csv(target: Path) -> Path:
    """``target`` if it is a file, else the one ``*instances.csv`` inside the folder."""
    if target.is_file():
        return target
    if not target.is_dir():
        raise InputError(f"not a file or folder: {str(target)!r}")
    found = sorted(target.glob("*instances.csv")) + sorted(target.glob("*instances.csv.gz"))
    if len(found) != 1:
        raise InputError(f"{target}: expected one *instances.csv, found {len(found)}")
    return found[0]


def _existing(path: Path) -> Path | None:
    if path.is_file():
        return path
    gz = path.with_name(path.name + ".gz")
    return gz if gz.is_file() else None


def _verify_instances(args: argparse.Namespace) -> int:
    if not args.timeout_scale > 0:
        raise InputError(f"--timeout-scale must be positive, got {args.timeout_scale}")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    csv_path = find_instances_csv(Path(args.instances))
    rows = read_instances(csv_path)[: args.limit]
    out = Path(args.out)
    out.unlink(missing_ok=True)
    cex_dir = out.with_name(out.stem + "_counterexamples")
    errors = skipped = 0
    for inst in rows:
        names = [_rel(inst.onnx, csv_path.parent), _rel(inst.vnnlib, csv_path.parent)]
        onnx, vnnlib = _existing(inst.onnx), _existing(inst.vnnlib)
        timeout = inst.timeout * args.timeout_scale
        if (onnx is None or vnnlib is None) and args.skip_missing:
            skipped += 1
            continue
        try:
            if onnx is None or vnnlib is None:
                raise InputError(f"missing file {names[0] if onnx is None else names[1]}")
            res = verify(onnx, read_vnnlib(vnnlib), timeout, seed=args.seed)
            row = ResultRow(*names, timeout, res.verdict, res.time, res.details["prepare_time"])
            if res.verdict == "sat":
                cex_dir.mkdir(parents=True, exist_ok=True)
                write_result_file(cex_dir / f"{onnx.stem}__{vnnlib.stem}.txt", "sat",
                                  res.counterexample)
        except LipboundError as exc:
            errors += 1
            print(f"lipbound: {names[0]} {names[1]}: error: {exc}", file=sys.stderr)
            row = ResultRow(*names, timeout, "error", 0.0)
        append_result(out, row)
        print(f"{row.onnx},{row.vnnlib},{row.result},{row.time:.3f}", flush=True)
    print(f"{len(rows) - skipped} instances run ({skipped} skipped, {errors} errors); "
          f"results in {out}", file=sys.stderr)
    return EXIT_ROW_ERRORS if errors else 0


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("verify", help="decide a VNN-LIB property for an ONNX network",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("model", help="network (.onnx or .onnx.gz)")
    v.add_argument("property", help="property (.vnnlib or .vnnlib.gz)")
    v.add_argument("--timeout", type=float, required=True, help="seconds")
    v.add_argument("--json", action="store_true", help="print the full result as JSON")
    v.add_argument("--counterexample", metavar="OUT", help="write the VNN-COMP result file")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--progress", action="store_true")
    v.set_defaults(func=_verify)
    i = sub.add_parser("verify-instances", help="run a VNN-COMP instances.csv",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("instances", help="instances.csv, or a folder holding one")
    i.add_argument("--out", default="results.csv", help="results CSV (replaced)")
    i.add_argument("--timeout-scale", type=float, default=1.0,
                   help="multiply every row's timeout by this factor")
    i.add_argument("--limit", type=int, default=None, help="run only the first N rows")
    i.add_argument("--skip-missing", action="store_true",
                   help="skip rows whose files are missing instead of recording 'error'")
    i.add_argument("--seed", type=int, default=0)
    i.set_defaults(func=_verify_instances)
