"""``invert4tvg plan``: the per-GPU memory of a training config before anything is loaded
(:mod:`invert4tvg.training.memory_plan`)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="per-GPU memory of a training config on N GPUs of G GiB, planned on the meta device",
        description="Build the config's model on the meta device (no download, no memory) and print the bytes per "
        "GPU of weights, gradients, optimizer states, reference model, activations (gradient checkpointing, one "
        "micro-batch at the config's sequence length), chunked logits, FSDP2's unsharded layers, generation and a "
        "colocated vLLM's share, then whether the peak fits. Exit code 1 when it does not, with the cheapest fix. "
        "Any --field value after the options overrides the config, e.g. --fsdp full_shard or --use_peft true. "
        "Training runs the same check before loading the model.",
    )
    parser.add_argument("--config", required=True, help="a GRPO (or, with --sft, SFT) YAML config")
    parser.add_argument("--num_processes", type=int, default=8, help="GPUs (training processes); default 8")
    parser.add_argument("--gpu_memory_gb", type=float, default=80.0, help="memory per GPU in GiB; default 80")
    parser.add_argument("--sft", action="store_true", help="the config is an SFT warm-start config")
    parser.set_defaults(func=run, extra_args=[])


def run(args: argparse.Namespace) -> int:
    from invert4tvg.config import (
        DataArguments,
        GRPOArguments,
        ModelArguments,
        SFTArguments,
        TaskArguments,
        parse_config,
    )
    from invert4tvg.training import memory_plan as mp

    training = SFTArguments if args.sft else GRPOArguments
    model_args, data_args, _, train_args = parse_config(
        (ModelArguments, DataArguments, TaskArguments, training),
        ["--config", args.config, *[a for a in args.extra_args if a != "--"]],
    )
    budget = args.gpu_memory_gb * mp.GIB
    setup = mp.setup_from_config(model_args, data_args, train_args, args.num_processes)
    shapes = mp.shapes(
        model_args.model_name_or_path, model_args.lora_r, tuple(model_args.lora_target_modules)
    )
    mode = "LoRA" if setup.use_peft else "FSDP2 full" if setup.fsdp else "DDP full"
    print(
        f"{model_args.model_name_or_path}: {mode} fine-tuning on {args.num_processes} GPU(s) of "
        f"{args.gpu_memory_gb:g} GiB; {(shapes.language + shapes.vision) / 1e9:.2f} B parameters "
        f"({shapes.language / 1e9:.2f} B language, {shapes.vision / 1e9:.2f} B vision); micro-batch "
        f"{setup.micro_batch} x {setup.sequence_length} tokens ({setup.video_tokens} video + "
        f"{setup.prompt_tokens} prompt + {setup.max_completion_length} completion)"
    )
    print(mp.render(mp.plan(shapes, setup, budget), budget))
    problem = mp.refusal(shapes, setup, budget)
    if problem:
        print(problem)
        return 1
    return 0
