"""Options and helpers shared by the CLI subcommands: model, inputs, output and progress."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from lipbound.cli.data import DefaultRows, Inputs, fit_shape, load_inputs, select
from lipbound.errors import InputError
from lipbound.inputs import batched_input, check_model
from lipbound.io.model_source import SOURCES_HELP, LoadedModel, load_model
from lipbound.jsonutil import jsonable
from lipbound.report.files import dumps
from lipbound.report.jsonl import JsonlWriter
from lipbound.report.output import check_writable, write_atomic


def add_model_options(p: argparse.ArgumentParser, default: str | None = "digits-mlp") -> None:
    p.add_argument("--model", default=default, help=f"model: {SOURCES_HELP} "
                   f"(default: {default})")
    p.add_argument("--state-dict", metavar="FILE", help="weights for a module:factory model")


def add_input_options(p: argparse.ArgumentParser, index: str = "0") -> None:
    p.add_argument("--inputs", metavar="SOURCE",
                   help=".npy/.npz/.pt file or data set (digits, digits:train, breast_cancer, "
                        "diabetes, mnist1d); default: the shipped model's test split")
    p.add_argument("--labels", metavar="FILE", help="labels (.npy/.pt) for a file of inputs")
    p.add_argument("--index", default=DefaultRows(index),
                   help=f"rows to use: 'all', N, N,M,... or A:B (default: {index}, or as many "
                        "rows as there are)")
    p.add_argument("--data-range", nargs=2, type=float, metavar=("LO", "HI"),
                   help="clip the input ball to [LO, HI] (default: the data set's range, e.g. "
                        "[0, 1] for digits; none for files)")


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", metavar="FILE",
                   help="write the schema records to FILE (.json, or .jsonl streamed per input)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    p.add_argument("--progress", default="auto", choices=["auto", "on", "off"],
                   help="progress bars on stderr (auto: when stderr is a terminal)")
    p.add_argument("--seed", type=int, default=0, help="random seed (attacks, sampling)")


def progress_flag(args: argparse.Namespace) -> bool | str:
    return {"auto": "auto", "on": True, "off": False}[args.progress]


def model_from(args: argparse.Namespace) -> LoadedModel:
    """The ``--model``, checked as the bound API checks it (eval mode, float32/float64)."""
    if not args.model:
        raise InputError(f"give a model with --model ({SOURCES_HELP})")
    loaded = load_model(args.model, args.state_dict)
    check_model(loaded.module)
    return loaded


def inputs_from(args: argparse.Namespace, loaded: LoadedModel) -> Inputs:
    """The selected rows of ``--inputs`` (or the model's default data set), shaped for it."""
    source = args.inputs or loaded.data
    if source is None:
        raise InputError(f"model {loaded.name} has no default data set; give --inputs")
    inputs = select(load_inputs(source, args.labels), args.index)
    return fitted(inputs, loaded)


def fitted(inputs: Inputs, loaded: LoadedModel) -> Inputs:
    """``inputs`` reshaped for the model (:func:`fit_shape`) and checked to run on it, as the
    API checks an input (a lipbound ShapeError before any work, not torch's error later)."""
    inputs = fit_shape(inputs, loaded.input_shape)
    batched_input(loaded.module, inputs.X[0])
    return inputs


def data_range_from(args: argparse.Namespace, inputs: Inputs) -> tuple[float, float] | None:
    if args.data_range is None:
        return inputs.data_range
    lo, hi = args.data_range
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"--data-range: LO and HI must be finite numbers, got {lo} {hi}")
    if not lo <= hi:
        raise InputError(f"--data-range: LO must be <= HI, got {lo} > {hi}")
    return (float(lo), float(hi))


class RecordSink:
    """Where records go: ``--output`` (.jsonl streamed per record; .json written atomically at
    the end) and/or a list kept for ``--json``. The output path is checked before any work."""

    def __init__(self, output: str | None) -> None:
        self.records: list[dict] = []
        self.path = Path(output) if output else None
        self._writer: JsonlWriter | None = None
        if self.path is not None:
            if self.path.suffix not in (".json", ".jsonl"):
                raise InputError(f"--output {output}: use a .json or .jsonl file name")
            check_writable(self.path)

    def add(self, record: dict) -> None:
        self.records.append(record)
        if self.path is not None and self.path.suffix == ".jsonl":
            if self._writer is None:
                self._writer = JsonlWriter(self.path)
            self._writer.write(record)

    def close(self) -> None:
        """Finish the output file (a .json file appears only now, complete)."""
        if self._writer is not None:
            self._writer.close()
        elif self.path is not None and self.path.suffix == ".json":
            write_atomic(self.path, json.dumps({"records": jsonable(self.records)}, indent=1,
                                               allow_nan=False))

    def __enter__(self) -> RecordSink:
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None:  # keep the finished records of a stopped run
            self._writer.close()


def print_json(obj: Any) -> None:
    print(json.dumps(json.loads(dumps(obj)), indent=2))


def label_of(inputs: Inputs, i: int) -> int | None:
    return None if inputs.y is None else int(inputs.y[i])


def source_index(inputs: Inputs, i: int) -> int:
    return inputs.indices[i] if inputs.indices is not None else i
