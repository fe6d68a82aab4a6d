"""Runs that cannot be mixed up or lost (issue 10): output directories, resume checks, validation before the disk
is touched, non-finite weights, torn metric logs and damaged checkpoints, on real tiny GRPO runs (SIGTERM and
Ctrl-C: test_run_stops.py)."""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_fixtures import FAST, REPO, copy_run, grpo_args
from safetensors.torch import load_file

import rewards
from invert4tvg.config import GRPOArguments, SFTArguments
from invert4tvg.config_checks import ConfigError
from invert4tvg.training.checkpoint import CheckpointError, list_checkpoints
from invert4tvg.training.guards import NonFiniteError
from invert4tvg.training.output_dir import OutputDirError, resume_differences
from invert4tvg.training.run_log import MetricsLog, read_metrics
from invert4tvg.workflows.recipe_loader import load_recipe


def safety_length(completions, **columns):
    """Spread on an untrained model (every built-in reward scores it 0), so updates move the weights."""
    return [len(c) / 100 for c in completions]


if "safety_length" not in rewards.available():
    rewards.register("safety_length", safety_length)


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


# -- item 2: a second run into a finished output directory ----------------------------------------------------
def test_second_run_into_a_finished_dir_is_refused_and_changes_nothing(
    grpo, finished, tiny_bench, tiny_model_dir, train_file
):
    before = snapshot(finished)
    with pytest.raises(
        OutputDirError, match=r"not empty.*--resume_from_checkpoint latest.*--overwrite_output_dir"
    ):
        grpo.main(grpo_args(tiny_bench, train_file, tiny_model_dir, finished, "--max_steps", "1", *FAST))
    assert snapshot(finished) == before


def test_overwrite_replaces_the_previous_run_and_only_its_files(
    grpo, finished, tiny_bench, tiny_model_dir, train_file, tmp_path
):
    run = copy_run(finished, tmp_path / "run")
    (run / "train.log").write_text("the launcher's log\n")
    grpo.main(
        grpo_args(
            tiny_bench,
            train_file,
            tiny_model_dir,
            run,
            "--max_steps",
            "1",
            "--overwrite_output_dir",
            "true",
            *FAST,
        )
    )
    assert [r["step"] for r in read_metrics(run)] == [1]
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_1"]
    assert json.loads((run / "metadata.json").read_text())["config"]["max_steps"] == 1
    assert (run / "train.log").read_text() == "the launcher's log\n"  # not a run file: kept


def test_resume_and_overwrite_together_are_refused(grpo, tiny_bench, tiny_model_dir, train_file, tmp_path):
    with pytest.raises(OutputDirError, match="give one of them"):
        grpo.main(
            grpo_args(
                tiny_bench, train_file, tiny_model_dir, tmp_path / "run", "--resume_from_checkpoint", "latest",
                "--overwrite_output_dir", "true",
            )
        )  # fmt: skip
    assert not (tmp_path / "run").exists()


# -- item 3: resume checks before it writes -------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, field",
    [(("--seed", "7"), "seed"), (("--learning_rate", "0.5"), "learning_rate")],
)
def test_resume_with_a_changed_config_is_refused_before_any_write(
    grpo, finished, tiny_bench, tiny_model_dir, train_file, tmp_path, change, field
):
    run = copy_run(finished, tmp_path / "run")
    before = snapshot(run)
    args = grpo_args(
        tiny_bench,
        train_file,
        tiny_model_dir,
        run,
        "--max_steps",
        "2",
        "--resume_from_checkpoint",
        "latest",
        *FAST,
    )
    with pytest.raises(OutputDirError, match=f"{field}: .* -> "):
        grpo.main([*args, *change])
    assert snapshot(run) == before  # metadata.json still holds the run's own configuration


def test_resume_may_change_the_listed_fields_and_records_them(
    grpo, finished, tiny_bench, tiny_model_dir, train_file, tmp_path
):
    run = copy_run(finished, tmp_path / "run")
    args = grpo_args(tiny_bench, train_file, tiny_model_dir, run, "--resume_from_checkpoint", "latest", *FAST)
    grpo.main([*args, "--max_steps", "3", "--logging_steps", "2", "--save_total_limit", "5"])
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["config"]["logging_steps"] == 2 and meta["config"]["max_steps"] == 3
    assert meta["resumed_from"].endswith("step_2")
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]


def test_length_may_change_only_under_a_constant_schedule():
    old = {"max_steps": 10, "lr_scheduler_type": "constant", "warmup_ratio": 0.0, "seed": 1}
    assert resume_differences(old, {**old, "max_steps": 20}) == (["max_steps: 10 -> 20"], [])
    cosine = {**old, "lr_scheduler_type": "cosine"}
    assert resume_differences(cosine, {**cosine, "max_steps": 20}) == ([], ["max_steps: 10 -> 20"])


# -- items 11 and 13: rejected at parse time, before the disk is touched ----------------------------------------
@pytest.mark.parametrize(
    "extra, message",
    [
        (("--num_generations", "1"), "num_generations must be at least 2.*no baseline"),
        (("--num_generations", "0"), "num_generations must be at least 2"),
        (("--num_generations", "-3"), "num_generations must be at least 2"),
        (("--per_device_train_batch_size", "0"), "per_device_train_batch_size must be at least 1"),
        (("--reward_funcs", "invert4tvg", "no_such_reward"), "unknown reward.*'no_such_reward'"),
        (
            ("--reward_funcs", "invert4tvg", "safety_length", "--reward_weights", "1.0"),
            "reward_weights has 1",
        ),
        (("--max_steps", "-1", "--num_train_epochs", "0"), "nothing to train"),
    ],
)
def test_bad_sizes_and_rewards_fail_before_output_dir_exists(
    grpo, tiny_bench, tiny_model_dir, train_file, tmp_path, extra, message
):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        grpo.main(
            [*grpo_args(tiny_bench, train_file, tiny_model_dir, out, "--max_steps", "1", *FAST), *extra]
        )
    assert not out.exists()


def test_sft_batch_size_zero_is_rejected():
    with pytest.raises(ConfigError, match="per_device_train_batch_size"):
        SFTArguments(per_device_train_batch_size=0)
    GRPOArguments(num_generations=2, reward_funcs=["invert4tvg"])  # the smallest valid group


# -- item 4: NaN weights are never checkpointed --------------------------------------------------------------
def test_non_finite_weights_stop_the_run_and_name_the_last_good_checkpoint(
    grpo, tiny_bench, tiny_model_dir, train_file, tmp_path
):
    """The issue's lr 1e30: one warmup step at lr 0 (a good step_1), then step 2's update leaves NaN/inf weights."""
    out = tmp_path / "run"
    args = grpo_args(tiny_bench, train_file, tiny_model_dir, out, "--max_steps", "3", *FAST)
    args += ["--learning_rate", "1e30", "--lr_scheduler_type", "linear", "--warmup_ratio", "0.3"]
    args += ["--num_generations", "4", "--per_device_train_batch_size", "4"]
    args += ["--reward_funcs", "invert4tvg", "safety_length"]
    with pytest.raises(NonFiniteError, match=r"NaN/inf after step 2.*Last good checkpoint: .*step_1"):
        grpo.main(args)
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_1"]
    weights = load_file(out / "checkpoints/step_1/model/model.safetensors")
    assert all(bool(t.isfinite().all()) for t in weights.values())
    assert not (out / "final").exists()


# -- item 5: a torn metrics line ------------------------------------------------------------------------------
def test_a_torn_metrics_line_does_not_block_resume(
    grpo, finished, tiny_bench, tiny_model_dir, train_file, tmp_path
):
    run = copy_run(finished, tmp_path / "run")
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 3, "reward": 0.1, "lo')  # killed mid-write
    args = grpo_args(
        tiny_bench,
        train_file,
        tiny_model_dir,
        run,
        "--resume_from_checkpoint",
        "latest",
        "--max_steps",
        "3",
        *FAST,
    )
    grpo.main(args)
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]


def test_a_failed_metrics_write_leaves_no_half_line(tmp_path):
    log = MetricsLog(tmp_path)
    log.log({"reward": 0.5}, 1)
    good = (tmp_path / "metrics.jsonl").read_bytes()
    (tmp_path / "metrics.jsonl").unlink()
    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")  # every write: ENOSPC, as on a full disk
    with pytest.raises(OSError, match="no space left on device while writing the metrics of step 2"):
        log.log({"reward": 0.7}, 2)
    (tmp_path / "metrics.jsonl").unlink()
    (tmp_path / "metrics.jsonl").write_bytes(good + b'{"step": 2, "rew')
    log = MetricsLog(tmp_path)  # opened again, as on resume: the torn line goes
    log.log({"reward": 0.9}, 3)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 3]


def test_a_broken_line_inside_the_log_is_named(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, oops}\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 2"):
        read_metrics(tmp_path)


# -- item 6: a damaged newest checkpoint ----------------------------------------------------------------------
def test_resume_latest_falls_back_from_a_damaged_checkpoint(
    grpo, finished, tiny_bench, tiny_model_dir, train_file, tmp_path, caplog
):
    run = copy_run(finished, tmp_path / "run")
    (run / "checkpoints/step_2/optimizer.pt").write_bytes(b"")  # emptied (disk full, a bad copy)
    args = grpo_args(tiny_bench, train_file, tiny_model_dir, run, "--max_steps", "2", *FAST)
    with pytest.raises(CheckpointError, match=r"optimizer\.pt has 0 bytes"):
        grpo.main([*args, "--resume_from_checkpoint", str(run / "checkpoints/step_2")])
    with caplog.at_level(logging.WARNING):
        grpo.main([*args, "--resume_from_checkpoint", "latest"])
    assert "step_2 is damaged (optimizer.pt has 0 bytes" in caplog.text
    assert "falling back to step_1" in caplog.text
    assert json.loads((run / "metadata.json").read_text())["resumed_from"].endswith("step_1")
    assert [r["step"] for r in read_metrics(run)] == [1, 2]
    assert math.isfinite(read_metrics(run)[-1]["loss"])


def test_final_is_replaced_atomically(finished, tmp_path):
    """A kill while ``final/`` is rewritten leaves the previous ``final/`` whole (a real SIGKILL mid-save)."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from invert4tvg.training.output_dir import write_final

    run = copy_run(finished, tmp_path / "run")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(run / "final")
    write_final(model, AutoProcessor.from_pretrained(run / "final"), run, 2)
    reference = snapshot(run / "final")  # what every save below writes, byte for byte
    script = (
        "import invert4tvg, sys\n"
        "from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration\n"
        "from invert4tvg.training.output_dir import write_final\n"
        "m = Qwen2_5_VLForConditionalGeneration.from_pretrained(sys.argv[1])\n"
        "p = AutoProcessor.from_pretrained(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "while True: write_final(m, p, sys.argv[2], 2)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(run / "final"), str(run)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    for _ in range(
        20
    ):  # kill it while it writes (a save takes tens of milliseconds; most of the loop is writing)
        time.sleep(0.15)
        if (run / ".final.tmp").exists():
            break
    proc.kill()
    proc.wait()
    assert snapshot(run / "final") == reference
    shutil.rmtree(run / ".final.tmp", ignore_errors=True)


# -- item 1: no code execution through --resume_from_checkpoint ----------------------------------------------
def test_resume_refuses_a_checkpoint_that_would_run_code(
    grpo, finished, tiny_bench, tiny_model_dir, train_file, tmp_path
):
    from checkpoint_fixtures import write_malicious_pickle

    from invert4tvg.training.checkpoint import _write_manifest

    run = copy_run(finished, tmp_path / "run")
    marker = tmp_path / "pwned"
    write_malicious_pickle(run / "checkpoints/step_2/scheduler.pt", marker)
    _write_manifest(run / "checkpoints/step_2")  # an attacker who can write files can fix the manifest too
    args = grpo_args(
        tiny_bench,
        train_file,
        tiny_model_dir,
        run,
        "--max_steps",
        "2",
        "--resume_from_checkpoint",
        "latest",
        *FAST,
    )
    with pytest.raises(CheckpointError, match=r"refusing to load .*scheduler\.pt.*could run arbitrary code"):
        grpo.main(args)
    assert not marker.exists()


def test_sft_refuses_a_non_empty_output_dir_before_loading_anything(tiny_bench, tiny_model_dir, tmp_path):
    out = tmp_path / "sft"
    out.mkdir()
    (out / "metadata.json").write_text("{}")
    args = [
        "--config",
        str(REPO / "recipes/configs/sft_tiny_cpu.yaml"),
        "--model_name_or_path",
        str(tiny_model_dir),
    ]
    args += [
        "--train_annotations",
        str(tiny_bench / "train.json"),
        "--video_dir",
        str(tiny_bench / "videos"),
        "--output_dir",
        str(out),
        "--report_to",
        "none",
    ]
    with pytest.raises(OutputDirError, match="not empty"):
        load_recipe("sft_warmstart").main(args)
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json"]
