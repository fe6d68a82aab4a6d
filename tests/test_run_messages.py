"""What a user reads: `invert4tvg eval`'s default output folder and summary line, and the lines that open and
close a training run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "invert4tvg.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )


def test_eval_writes_next_to_the_model_and_says_how_many_answers_did_not_parse(
    tiny_model_dir, tiny_bench, tmp_path
):
    final = tmp_path / "run" / "final"
    shutil.copytree(tiny_model_dir, final)  # an untrained model: its answers do not parse
    result = cli(
        "eval", "--model", str(final), "--data", str(tiny_bench), "--config", "recipes/configs/tiny_cpu.yaml",
        "--split", "val", "--tasks", "", "--max-samples", "3", "--max-new-tokens", "8",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "run" / "eval-val"  # no --out: next to the model, beside the run's own eval/
    metrics = json.loads((out / "metrics.json").read_text())
    failed, samples = metrics["counts"]["parse_failures"], metrics["counts"]["samples"]
    assert failed == samples > 0 and metrics["mIoU"] == 0.0
    summary = result.stdout.splitlines()[0]
    assert f"{failed} of {samples} answers did not parse (IoU 0)" in summary, summary
    assert re.match(r"R1@0\.3=0\.0 R1@0\.5=0\.0 R1@0\.7=0\.0 mIoU=0\.0 \(", summary), summary
    assert str(out) in result.stdout
    # every number a person reads is rounded: no 26.666666666666668, in the summary or in the log lines
    assert not re.search(r"\d\.\d{4,}", result.stdout + result.stderr), result.stdout + result.stderr


def test_summary_line_rounds_and_counts():
    from invert4tvg.eval.metrics import summary_line

    metrics = {
        "R1@0.3": 26.666666666666668,
        "R1@0.5": 10.0,
        "R1@0.7": 0.0,
        "mIoU": 20.123456,
        "VC": None,
        "parser": "answer",
        "counts": {"samples": 60, "parse_failures": 0, "gt_past_video_end": 2},
    }
    line = summary_line(metrics)
    assert line.startswith("R1@0.3=26.7 R1@0.5=10.0 R1@0.7=0.0 mIoU=20.1 (parser answer, 60 queries, ")
    assert "did not parse" not in line and "2 ground-truth spans past the video's end" in line


def test_a_run_says_what_it_trains_and_where_the_result_is(tiny_bench, tiny_model_dir, tmp_path, capsys):
    from run_fixtures import grpo_args, small_train

    from invert4tvg.workflows.recipe_loader import load_recipe

    train = small_train(tiny_bench, tmp_path / "train.json")
    sft = tmp_path / "sft"
    load_recipe("sft_warmstart").main(
        [
            "--config", str(REPO / "recipes/configs/sft_tiny_cpu.yaml"),
            "--model_name_or_path", str(tiny_model_dir), "--train_annotations", str(train),
            "--val_annotations", "", "--test_annotations", "", "--video_dir", str(tiny_bench / "videos"),
            "--frame_cache_dir", "", "--output_dir", str(sft), "--max_steps", "1", "--report_to", "none",
            "--per_device_train_batch_size", "2",
        ]
    )  # fmt: skip
    said = capsys.readouterr().out
    assert f"SFT: head text_timestamps, model {tiny_model_dir} (full fine-tuning), 1 step" in said
    assert "batch: 2 examples per step (micro-batches of 2, gradient_accumulation_steps 1)" in said
    assert f"output: {sft} (metrics.jsonl, checkpoints/, final/); watch it: metrics.jsonl only" in said
    assert f"SFT finished: the trained model is in {sft / 'final'}" in said  # SFT used to end silently

    out = tmp_path / "grpo"
    reward_file = f"{REPO / 'examples/span_reward.py'}:span_inside_video"
    args = grpo_args(tiny_bench, train, sft / "final", out, "--max_steps", "1", "--save_steps", "0")
    args += ["--report_to", "tensorboard", "--reward_funcs", "invert4tvg", "format", reward_file]
    args += [
        "--per_device_train_batch_size",
        "8",
        "--num_generations",
        "4",
        "--gradient_accumulation_steps",
        "2",
    ]
    load_recipe("grpo_qwen25vl").main(args)
    said = capsys.readouterr().out
    assert f"GRPO: head text_timestamps, model {sft / 'final'} (full fine-tuning), 1 step" in said
    rewards_line = next(line for line in said.splitlines() if line.startswith("rewards: "))
    assert rewards_line == (
        f"rewards: invert4tvg (built-in), format (built-in), span_inside_video (file {REPO / 'examples/span_reward.py'})"
    )
    assert "batch: 4 prompts x 4 generations = 16 completions per step (micro-batches of 8, " in said
    assert f"watch it: tensorboard --logdir {out}" in said
    assert f"GRPO finished: the trained model is in {out / 'final'}" in said
    assert f"evaluate it with: invert4tvg eval --model {out / 'final'}" in said


def test_a_local_ray_starts_without_the_token_auth_warning():
    """Ray's "Token authentication is enabled ... Set RAY_AUTH_MODE=disabled to opt out" is not printed at every
    ray-hf start; authentication stays on."""
    script = (
        "import os, ray\n"
        "from invert4tvg.rollout import cluster\n"
        "assert cluster.connect(None, num_cpus=1)\n"
        "print('mode', os.environ.get('RAY_AUTH_MODE'))\n"
        "ray.shutdown()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_AUTH_MODE", None)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mode token" in done.stdout  # Ray's default for a new local instance, kept
    assert "Token authentication is enabled" not in done.stderr, done.stderr[-3000:]
