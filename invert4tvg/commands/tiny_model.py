"""``invert4tvg tiny-model``: build the offline ~1 M-parameter Qwen2.5-VL used by tests and the demo."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tiny-model",
        help="build the tiny offline Qwen2.5-VL (model, tokenizer, processor)",
        description="Build a ~1 M-parameter Qwen2.5-VL with a locally trained tokenizer and save it with "
        "save_pretrained, loadable by from_pretrained / AutoProcessor.from_pretrained.",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed (default: 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from transformers import Qwen2_5_VLForConditionalGeneration

    from invert4tvg.policy.tiny_qwen import build_tiny_model, count_parameters

    out = build_tiny_model(args.out, seed=args.seed)
    n_params = count_parameters(Qwen2_5_VLForConditionalGeneration.from_pretrained(out))
    print(f"tiny Qwen2.5-VL ({n_params / 1e6:.2f} M parameters) written to {out}")
    return 0
