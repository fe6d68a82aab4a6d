"""``invert4tvg train``: run a training recipe in this process (one CPU or GPU).

The same as ``python recipes/grpo_qwen25vl.py`` (or ``recipes/sft_warmstart.py`` with ``--sft``); for several GPUs
use ``accelerate launch recipes/grpo_qwen25vl.py ...``, which starts one process per device.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="run the GRPO recipe (or the SFT warm start with --sft) on a YAML config, in this process",
        description="Run recipes/grpo_qwen25vl.py (or recipes/sft_warmstart.py with --sft) in this process. Every "
        "other argument goes to the recipe: --config FILE.yaml and any --field value override, e.g. "
        "`invert4tvg train --config recipes/configs/tiny_cpu.yaml --max_steps 10`. For "
        "multi-GPU runs use `accelerate launch recipes/grpo_qwen25vl.py --config ...`.",
    )
    parser.add_argument("--sft", action="store_true", help="run the supervised warm start instead of GRPO")
    parser.set_defaults(func=run, extra_args=[])


def run(args: argparse.Namespace) -> int:
    from invert4tvg.demo import load_recipe

    recipe_args = [a for a in args.extra_args if a != "--"]
    if "--config" not in recipe_args:
        raise SystemExit("invert4tvg train: give --config FILE.yaml (see recipes/configs/)")
    from invert4tvg.training.stops import run_main

    # SIGINT / SIGTERM: a checkpoint, one line saying how to resume, exit 130 / 143 (docs/training.md)
    run_main(load_recipe("sft_warmstart" if args.sft else "grpo_qwen25vl").main, recipe_args)
    return 0
