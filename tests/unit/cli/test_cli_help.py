"""Every argument of every `geodesic` command says what it is for (`--help` is the manual)."""

import argparse

import pytest

from geodesic.cli.main import LEAN, build_parser


def _walk(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_argument_of_every_command_has_a_help_line():
    missing = [
        f"{path}: {'/'.join(action.option_strings) or action.dest}"
        for path, action in _walk(build_parser(), "geodesic")
        if not (action.help or "").strip() or action.help == argparse.SUPPRESS
    ]
    assert missing == []


def test_every_subcommand_has_a_help_line():
    parser = build_parser()
    missing = []
    stack = [("geodesic", parser)]
    while stack:
        path, p = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for name, sub in action.choices.items():
                    if not (helps.get(name) or "").strip():
                        missing.append(f"{path} {name}")
                    stack.append((f"{path} {name}", sub))
    assert missing == []


@pytest.mark.parametrize("command", sorted(LEAN))
def test_a_lean_command_is_registered_by_the_module_main_imports_for_it(command):
    """main() builds only LEAN[command]'s parser for it: that module must own it."""
    lean = build_parser((LEAN[command],))
    sub = next(a for a in lean._actions if isinstance(a, argparse._SubParsersAction))
    assert command in sub.choices
