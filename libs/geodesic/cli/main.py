"""The `geodesic` command line: one entry point, commands contributed by small modules.

Each module in COMMAND_MODULES has `register(subparsers)`, which adds its commands and
sets `func` (args -> exit code) on each parser; so the stack, lifecycle, operator and
demo commands live next to what they drive instead of in one long file.

Start-up time is part of the emergency path: `geodesic kill-switch on` must set the flag
well under a second after Enter. So a command listed in LEAN registers only its own
module (whose imports are light; handlers import what they need when they run), and
only `--help` or an unknown command pays for importing every module.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMAND_MODULES = (
    "geodesic.cli.stack_cmds",
    "geodesic.cli.lifecycle_cmds",
    "geodesic.cli.operator.commands",
    "geodesic.cli.demo_cmds",
    "geodesic.cli.record_cmds",
    "geodesic.cli.replay_cmds",
)

#: command -> the one module that registers it (tests check this against the full tree)
LEAN = {
    name: "geodesic.cli.operator.commands"
    for name in (
        "kill-switch",
        "halt",
        "resume",
        "rollback",
        "promote",
        "rollout",
        "shadow",
        "cooldown",
        "status",
        "gates",
        "history",
        "report",
    )
}


def build_parser(modules: tuple[str, ...] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geodesic", description="Geodesic streaming trading-signal platform"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def _command(argv: list[str]) -> str | None:
    """The command word: the first argument that is not a global option."""
    for arg in argv:
        if arg not in ("-v", "--verbose"):
            return None if arg.startswith("-") else arg
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    lean = LEAN.get(_command(argv) or "")
    parser = build_parser((lean,) if lean else COMMAND_MODULES)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
