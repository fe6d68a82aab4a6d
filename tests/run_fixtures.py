"""Helpers for the run-safety tests: command lines of tiny GRPO / SFT runs on the synthetic benchmark."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAST = ("--beta", "0", "--video_fps", "1")  # no reference pass, half the frames: about a second a step here


def small_train(bench: Path, out: Path, n: int = 4) -> Path:
    """A train file with the first ``n`` queries of the benchmark's train split."""
    from test_grpo_training import subset

    return subset(bench, out, n)


def grpo_args(bench: Path, train: Path, model: Path, out: Path, *extra: str) -> list[str]:
    """A GRPO run of 2 prompts x 2 generations per step, 8 new tokens: about a second a step here."""
    return [
        "--config", str(REPO / "recipes/configs/tiny_cpu.yaml"),
        "--model_name_or_path", str(model),
        "--train_annotations", str(train),
        "--val_annotations", "",
        "--test_annotations", "",
        "--video_dir", str(bench / "videos"),
        "--frame_cache_dir", str(out.parent / "frame-cache"),
        "--output_dir", str(out),
        "--per_device_train_batch_size", "4",
        "--num_generations", "2",
        "--max_completion_length", "8",
        "--report_to", "none",
        "--save_steps", "1",
        *extra,
    ]  # fmt: skip


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
