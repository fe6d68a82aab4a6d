"""The ``invert4tvg`` command. Each subcommand lives in ``invert4tvg/commands/<name>.py`` and provides
``add_parser(subparsers)``; heavy imports happen inside the command so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
