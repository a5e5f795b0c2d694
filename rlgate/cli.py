"""The ``rlgate`` command line. Commands so far: ``cores`` (list the recurrent cores).

Errors from bad input are one line on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from rlgate.cores import CORES


def _cores(_args: argparse.Namespace) -> int:
    canonical = {}
    for name, preset in CORES.items():
        canonical.setdefault(preset.name, []).append(name)
    width = max(map(len, canonical))
    for name, names in canonical.items():
        preset = CORES[name]
        aliases = [n for n in names if n != name]
        alias = f" (aliases: {', '.join(aliases)})" if aliases else ""
        print(f"{name:<{width}}  {preset.description}{alias}")
        print(f"{'':<{width}}  options: {', '.join(preset.options)}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print the usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rlgate", description="Reinforcement learning with gated recurrent memory."
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    p = sub.add_parser("cores", help="list the recurrent cores (--core choices) and options")
    p.set_defaults(func=_cores)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``rlgate`` console script and ``python -m rlgate``."""
    args = build_parser().parse_args(argv)  # argparse exits 2 with a one-line usage error
    try:
        code = args.func(args)
    except ValueError as err:  # bad input from the user: one line, exit 2
        print(f"rlgate: error: {err}", file=sys.stderr)
        code = 2
    sys.exit(code)
