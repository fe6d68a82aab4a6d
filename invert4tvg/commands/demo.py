"""``invert4tvg demo``: the whole method on the embedded default (synthetic data, tiny model), on CPU."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="synthetic benchmark -> tiny model -> SFT -> GRPO -> evaluation table (what `make demo` runs)",
        description="Generate the synthetic benchmark, build the tiny Qwen2.5-VL, warm-start it with SFT, train it "
        "with GRPO (p = 0.8, VC/AR/VD), evaluate untrained / whole-video / SFT / GRPO on the test split, and write "
        "OUT/summary.json. Runs from a source checkout (it uses recipes/).",
    )
    parser.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    parser.add_argument(
        "--num-videos", type=int, default=600, help="synthetic videos to generate (default: 600)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sft-steps", type=int, help="override the SFT config's max_steps")
    parser.add_argument("--grpo-steps", type=int, help="override the GRPO config's max_steps")
    parser.add_argument(
        "grpo_overrides",
        nargs="*",
        metavar="--FIELD VALUE",
        help="extra GRPO config overrides after `--`, e.g. -- --rollout_backend ray-hf --rollout_workers 2",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from invert4tvg.workflows.demo import run_demo

    run_demo(args.out, args.num_videos, args.seed, args.grpo_overrides, args.sft_steps, args.grpo_steps)
    return 0
