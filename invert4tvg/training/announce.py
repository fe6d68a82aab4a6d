"""The lines a run opens and closes with: what is being trained, with which rewards and batch, where it writes, how
to watch it, and where the result is. Printed by the main process only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rewards


def _watch(args: Any) -> str:
    trackers = []
    if "tensorboard" in args.report_to:
        trackers.append(f"tensorboard --logdir {args.output_dir}")
    if "wandb" in args.report_to:
        trackers.append("W&B (wandb_project)")
    return "watch it: " + (" | ".join(trackers) if trackers else "metrics.jsonl only (report_to: none)")


def _length(args: Any, total_steps: int) -> str:
    return f"{total_steps} step{'s' if total_steps != 1 else ''}" + (
        "" if args.max_steps > 0 else f" ({args.num_train_epochs:g} epochs)"
    )


def grpo_start_lines(
    args: Any, model_args: Any, head: str, reward_names: Sequence[str], num_processes: int, total_steps: int
) -> list[str]:
    prompts = args.records_per_step
    completions = prompts * args.num_generations
    processes = "" if num_processes == 1 else f" on each of {num_processes} processes"
    training = f"LoRA r {model_args.lora_r}" if model_args.use_peft else "full fine-tuning"
    sources = ", ".join(
        f"{rewards.registry.display_name(n)} ({rewards.registry.origin(n)})" for n in reward_names
    )
    return [
        f"GRPO: head {head}, model {model_args.model_name_or_path} ({training}), {_length(args, total_steps)}",
        f"rewards: {sources}",
        f"batch: {prompts} prompts x {args.num_generations} generations = {completions} completions per step"
        f"{processes} (micro-batches of {args.per_device_train_batch_size}, "
        f"gradient_accumulation_steps {args.gradient_accumulation_steps})",
        f"output: {args.output_dir} (metrics.jsonl, checkpoints/, final/); {_watch(args)}",
    ]


def sft_start_lines(args: Any, model_args: Any, head: str, num_processes: int, total_steps: int) -> list[str]:
    processes = "" if num_processes == 1 else f" on each of {num_processes} processes"
    training = f"LoRA r {model_args.lora_r}" if model_args.use_peft else "full fine-tuning"
    invert = f", Invert-SFT {args.invert_sft_fraction:g} ({', '.join(args.invert_sft_tasks)})"
    return [
        f"SFT: head {head}, model {model_args.model_name_or_path} ({training}), {_length(args, total_steps)}"
        + (invert if args.invert_sft_fraction > 0 else ""),
        f"batch: {args.records_per_step} examples per step{processes} (micro-batches of "
        f"{args.per_device_train_batch_size}, gradient_accumulation_steps {args.gradient_accumulation_steps})",
        f"output: {args.output_dir} (metrics.jsonl, checkpoints/, final/); {_watch(args)}",
    ]


def end_lines(
    final: str | Path, kind: str, eval_dir: str | Path | None = None, summary: str = ""
) -> list[str]:
    lines = [f"{kind} finished: the trained model is in {final}"]
    if eval_dir is not None:
        lines.append(f"test split evaluated into {eval_dir}: {summary}")
    if kind == "SFT":
        lines.append(f"start GRPO from it with --model_name_or_path {final}")
    else:
        lines.append(f"evaluate it with: invert4tvg eval --model {final}")
    return lines


def say(accelerator, lines: Sequence[str]) -> None:
    if accelerator.is_main_process:
        print("\n".join(lines), flush=True)
