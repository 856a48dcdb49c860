"""The `medpo-ray` command line. Each command group lives beside the code it drives and registers
its own sub-commands; this file only assembles them and turns user errors into clear messages."""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from medpo_ray.errors import MedpoError

# Modules exposing `register(add)`. `add("data synth", help=...)` returns the argparse parser of that
# (possibly nested) command; the module then adds its arguments and `set_defaults(func=...)`.
# Heavy imports (torch, vllm, ray) belong inside the command functions, so `--help` stays instant.
_COMMAND_MODULES = [
    "medpo_ray.data.cli",
    "medpo_ray.data.validate_cli",
    "medpo_ray.models.cli",
    "medpo_ray.critics.check",
    "medpo_ray.sft.cli",
    "driver.train_cli",
    "driver.demo_cli",
    "driver.eval_cli",
    "driver.explore_cli",
]

AddCommand = Callable[..., argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered command."""
    parser = argparse.ArgumentParser(
        prog="medpo-ray", description="Fine-grained on-policy preference optimization (FiRe-MPO) for medical VLMs, on Ray.")
    root = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}

    def add(path: str, help: str = "", **kwargs) -> argparse.ArgumentParser:
        *group, name = path.split()
        subs = root
        for depth, g in enumerate(group):
            key = " ".join(group[: depth + 1])
            if key not in groups:
                p = subs.add_parser(g, help=f"{g} commands")
                groups[key] = p.add_subparsers(dest=f"{key.replace(' ', '_')}_command", required=True,
                                               metavar="COMMAND")
            subs = groups[key]
        return subs.add_parser(name, help=help, description=help, **kwargs)

    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `medpo-ray` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MedpoError as e:
        print(f"medpo-ray {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medpo-ray {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
