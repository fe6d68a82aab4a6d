"""The main job end to end at toy size (`make demo`'s code path), and `invert4tvg eval` / `report` on its output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from invert4tvg.workflows.demo import GROUNDING_KEYS, run_demo


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, num_videos=12, seed=0, sft_steps=3, grpo_steps=2)
    return out


def test_demo_writes_summary_and_evaluations(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    assert list(summary) == ["untrained", "whole_video", "sft", "grpo"]
    for metrics in summary.values():
        assert list(metrics) == list(GROUNDING_KEYS)
        assert all(0.0 <= v <= 100.0 for v in metrics.values())
    # The whole-video baseline covers every span, so it always reaches IoU = |gt| / duration > 0.
    assert summary["whole_video"]["mIoU"] > 0
    for name in ("untrained", "sft", "grpo"):
        metrics = json.loads((demo_dir / "eval" / name / "metrics.json").read_text())
        assert metrics["counts"]["samples"] > 0
        assert {"VC", "AR", "VD"} <= set(metrics)
    run_meta = json.loads((demo_dir / "grpo" / "metadata.json").read_text())
    assert run_meta["p"] == 0.8 and run_meta["invert_tasks"] == ["vc", "ar", "vd"]
    assert (demo_dir / "grpo" / "final" / "model.safetensors").exists()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "invert4tvg.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_eval_command(demo_dir, tmp_path):
    out = tmp_path / "eval"
    result = cli(
        "eval",
        "--model",
        str(demo_dir / "grpo" / "final"),
        "--data",
        str(demo_dir / "bench"),
        "--config",
        "recipes/configs/tiny_cpu.yaml",
        "--split",
        "val",
        "--out",
        str(out),
        "--max-new-tokens",
        "16",
        "--tasks",
        "vc",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    val = json.loads((demo_dir / "bench" / "val.json").read_text())
    assert metrics["counts"]["samples"] == len(rows) == sum(len(v["sentences"]) for v in val.values())
    assert metrics["AR"] is None and metrics["VC"] is not None
    assert metrics["metadata"]["split"] == "val"
    assert all({"id", "query", "gt", "output", "pred", "iou"} <= set(r) for r in rows)
    assert "R1@0.5=" in result.stdout


def test_eval_names_a_missing_split(demo_dir, tmp_path):
    result = cli(
        "eval",
        "--model",
        str(demo_dir / "grpo" / "final"),
        "--format",
        "tvg-json",
        "--split",
        "test",
        "--out",
        str(tmp_path / "x"),
    )
    assert result.returncode != 0
    assert "test_annotations" in result.stderr


def test_report_over_demo_runs(demo_dir, tmp_path):
    result = cli(
        "report",
        str(demo_dir / "eval" / "sft"),
        str(demo_dir / "eval" / "grpo"),
        str(demo_dir / "grpo"),
        "--out",
        str(tmp_path / "report"),
        "--vis-items",
        "2",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "grpo" in text and "sft" in text


def test_train_command_runs_the_sft_recipe(demo_dir, tmp_path):
    bench = demo_dir / "bench"
    result = cli(
        "train",
        "--sft",
        "--config",
        "recipes/configs/sft_tiny_cpu.yaml",
        "--model_name_or_path",
        str(demo_dir / "tiny-model"),
        "--train_annotations",
        str(bench / "train.json"),
        "--video_dir",
        str(bench / "videos"),
        "--frame_cache_dir",
        "",
        "--output_dir",
        str(tmp_path / "sft"),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--report_to",
        "none",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "sft" / "final" / "model.safetensors").exists()
    assert len((tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()) >= 1


def test_train_command_needs_a_config():
    result = cli("train", "--max_steps", "2")
    assert result.returncode != 0 and "--config" in result.stderr


def test_eval_uses_the_rollout_backend_the_config_names(demo_dir, tmp_path):
    config = tmp_path / "vllm.yaml"
    config.write_text("rollout_backend: vllm\nvideo_min_pixels: 3136\nvideo_total_pixels: 200704\n")
    args = ["eval", "--model", str(demo_dir / "grpo" / "final"), "--data", str(demo_dir / "bench")]
    args += ["--split", "val", "--out", str(tmp_path / "e"), "--tasks", "", "--max-samples", "2"]
    result = cli(*args, "--config", str(config))
    assert result.returncode != 0 and "vllm" in result.stderr.lower()
    result = cli(*args, "--config", str(config), "--backend", "hf")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["metadata"]["rollout_backend"] == "hf"
