"""The `geodesic` command line: one entry point, commands contributed by small modules.

Each module in COMMAND_MODULES has `register(subparsers)`, which adds its commands and
sets `func` (args -> exit code) on each parser; so the stack, lifecycle, operator and
demo commands live next to what they drive instead of in one long file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMAND_MODULES = (
    "geodesic.cli.stack_cmds",
    "geodesic.cli.lifecycle_cmds",
    "geodesic.cli.operator_cmds",
    "geodesic.cli.demo_cmds",
    "geodesic.cli.record_cmds",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geodesic", description="Geodesic streaming trading-signal platform"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
