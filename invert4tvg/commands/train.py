"""``invert4tvg train``: run a training recipe in this process (one CPU or GPU).

The same as ``python recipes/grpo_qwen25vl.py`` (or ``recipes/sft_warmstart.py`` with ``--sft``); for several GPUs
use ``accelerate launch recipes/grpo_qwen25vl.py ...``, which starts one process per device.

Which recipe file runs, first found (as ``tune run`` prefers a local copy of a recipe): ``./recipes/NAME.py`` of the
working directory (a checkout, or a copy you edited), the checkout the package was installed from (editable
installs), then the copy installed with the package under ``<prefix>/share/invert4tvg/recipes/``.
"""

from __future__ import annotations

import argparse

from invert4tvg.workflows.recipe_loader import load_recipe, recipe_path

RECIPES = {False: "grpo_qwen25vl", True: "sft_warmstart"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="run the GRPO recipe (or the SFT warm start with --sft) on a YAML config, in this process",
        description="Run recipes/grpo_qwen25vl.py (or recipes/sft_warmstart.py with --sft) in this process, from "
        "./recipes/ when the working directory has it, else the installed copy. Every other argument goes to the "
        "recipe: --config FILE.yaml and any --field value override, e.g. "
        "`invert4tvg train --config recipes/configs/tiny_cpu.yaml --max_steps 10`. --help also lists every "
        "recipe field. For multi-GPU runs use `accelerate launch recipes/grpo_qwen25vl.py --config ...`.",
        add_help=False,
    )
    parser.add_argument("-h", "--help", action="store_true", help="this help, then the recipe's fields")
    parser.add_argument("--sft", action="store_true", help="run the supervised warm start instead of GRPO")
    parser.add_argument(
        "--config", help="YAML file of recipe fields (recipes/configs/); --field value overrides win"
    )
    parser.set_defaults(func=run, extra_args=[], parser=parser)


def run(args: argparse.Namespace) -> int:
    from invert4tvg.training.stops import run_main

    recipe = load_recipe(RECIPES[args.sft])
    recipe_args = [a for a in args.extra_args if a != "--"]
    if args.help:
        args.parser.print_help()
        print(f"\nrecipe {recipe_path(RECIPES[args.sft])}:\n", flush=True)
        recipe.main(["--help"])  # the recipe's parser lists every field with its help and default, then exits
        return 0
    if not args.config:
        raise SystemExit("invert4tvg train: give --config FILE.yaml (see recipes/configs/)")
    # SIGINT / SIGTERM: a checkpoint, one line saying how to resume, exit 130 / 143 (docs/training.md)
    run_main(recipe.main, ["--config", args.config, *recipe_args])
    return 0
