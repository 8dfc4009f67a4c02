"""Config files for subcommands: ``--config FILE`` (TOML, or YAML with PyYAML installed).

A config file is a flat mapping whose keys are the subcommand's long flag names (``eps``,
``data-range`` or ``data_range``); values have the flag's type (lists for multi-value flags,
true/false for switches). Precedence, highest first:

1. a flag given explicitly on the command line;
2. the config file;
3. the built-in default.

This is implemented by turning the file into the subparser's defaults and parsing the command
line again, so every key can be overridden by its flag. Unknown keys are an error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lipbound.errors import InputError

INTERNAL = {"func", "command", "config", "_parser", "audit_command"}


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` a ``--config FILE`` option (see the module docstring)."""
    parser.add_argument("--config", metavar="FILE",
                        help="TOML or YAML file of option values; flags given explicitly win "
                             "over the file, the file wins over built-in defaults")
    parser.set_defaults(_parser=parser)


def read_config(path: str | Path) -> dict[str, Any]:
    """The mapping in a .toml / .yaml / .yml file, keys normalised to argparse dests."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"config file {path} is not a UTF-8 text file (TOML or YAML)") from None
    if path.suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib  # deferred: heavy optional dependency (a --config parser)
        else:  # pragma: no cover - python 3.10
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"config file {path} is not valid TOML: {exc}") from None
    elif path.suffix in (".yaml", ".yml"):
        try:
            import yaml  # deferred: heavy optional dependency (a --config parser)
        except ImportError:
            raise InputError("YAML config files need PyYAML (pip install pyyaml); or use "
                             "TOML") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"config file {path} is not valid YAML: {exc}") from None
    else:
        raise InputError(f"config file {path}: use a .toml, .yaml or .yml file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _as_default(value: Any) -> Any:
    """Numbers become strings so argparse applies the option's type, as for a flag."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def apply_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                 args: argparse.Namespace) -> argparse.Namespace:
    """Re-parse ``argv`` with the config file of ``args.config`` as the subparser's defaults.

    Returns ``args`` unchanged when no config file was given (or the subcommand takes none).
    """
    if not getattr(args, "config", None):
        return args
    values = read_config(args.config)
    known = set(vars(args)) - INTERNAL
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"config file {args.config}: unknown option(s) {unknown}; known: "
                         f"{', '.join(sorted(k.replace('_', '-') for k in known))}")
    args._parser.set_defaults(**{k: _as_default(v) for k, v in values.items()})
    return parser.parse_args(argv)
