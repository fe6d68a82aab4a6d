"""The ``invert4tvg`` command. Each subcommand lives in ``invert4tvg/commands/<name>.py`` and provides
``add_parser(subparsers)``; heavy imports happen inside the command so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NoReturn

from invert4tvg.errors import EXIT_USER_ERROR, UserError, did_you_mean

# Subcommand modules, in the order `invert4tvg --help` lists them.
COMMANDS = (
    "tiny_model",
    "synth",
    "data_check",
    "train",
    "plan",
    "eval",
    "report",
    "demo",
    "compare",
    "env",
)


class Parser(argparse.ArgumentParser):
    """Every parser of the command (subcommands inherit the class): no abbreviations, so ``--num-video 5`` is an
    error instead of passing for ``--num-videos``, and a usage error is one line on stderr with exit status 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="invert4tvg",
        description="RL post-training for temporal video grounding (GRPO + Invert4TVG inversion tasks).",
    )
    from invert4tvg import __version__

    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"invert4tvg {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"invert4tvg.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # A command that hands its remaining options to a recipe (``train``) sets ``extra_args``; others reject them.
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "extra_args"):
        args.extra_args = extra
    elif extra:
        command = _chosen(parser, args)
        options = [o for action in command._actions for o in action.option_strings]
        unknown = next((a for a in extra if a.startswith("-")), extra[0]).split("=", 1)[0]
        command.error(f"unrecognized argument {unknown}{did_you_mean(unknown, options)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except UserError as err:  # a mistake in the input: one line, argparse's status (docs/training.md)
        print(f"invert4tvg {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)subcommand parser that ``args`` were parsed by."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = getattr(args, action.dest, None)
            if name in action.choices:
                return _chosen(action.choices[name], args)
    return parser


if __name__ == "__main__":
    sys.exit(main())
