"""The `medpo-ray` command line. Each command group lives beside the code it drives and registers
its own sub-commands; this file only assembles them and turns user errors into clear messages."""
from __future__ import annotations

import argparse
import importlib
import sys

from medpo_ray.errors import MedpoError

# Modules exposing `register(subparsers)`; each adds its commands with set_defaults(func=...).
_COMMAND_MODULES = [
    "medpo_ray.data.cli",
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered command."""
    parser = argparse.ArgumentParser(prog="medpo-ray", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `medpo-ray` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MedpoError as e:
        print(f"medpo-ray {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
