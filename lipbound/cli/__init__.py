"""The ``lipbound`` command line.

Each subcommand lives in its own module of this package and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` (a callable taking the
parsed namespace and returning an exit code). Add a module name to ``SUBCOMMAND_MODULES`` to
add a subcommand.

Exit codes: 0 success (for ``verify``: a verdict was reached), 1 unexpected errors,
2 invalid input or unsupported model (a lipbound error, message on stderr).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lipbound.cli.config import apply_config
from lipbound.errors import LipboundError

SUBCOMMAND_MODULES: tuple[str, ...] = ("demo", "bound", "audit", "report", "verify", "certify")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lipbound", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"lipbound.cli.{name}").register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args = apply_config(parser, argv, args)  # --config FILE: explicit flags still win
        return int(args.func(args))
    except LipboundError as exc:
        print(f"lipbound: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
