"""Configuration mistakes (issues 23 and 28): every field's type and range checked at parse time, in YAML and on the
command line alike; typos answered with the closest field; no argparse abbreviations; one line and exit 2."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from run_fixtures import grpo_args, small_train

from invert4tvg import cli
from invert4tvg.config import (
    DataArguments,
    GRPOArguments,
    ModelArguments,
    SFTArguments,
    TaskArguments,
    parse_config,
)
from invert4tvg.config_checks import CHOICES, RANGES, ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes/configs/tiny_cpu.yaml")
GRPO = (ModelArguments, DataArguments, TaskArguments, GRPOArguments)
SFT = (ModelArguments, DataArguments, TaskArguments, SFTArguments)


def yaml_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("learning_rate: true\n", r"learning_rate: expected a number, got True \(bool\)"),
        (
            "per_device_train_batch_size: [2]\n",
            r"per_device_train_batch_size: expected an integer, got \[2\]",
        ),
        ("num_generations: 2.5\n", r"num_generations: expected an integer, got 2.5"),
        ("use_peft: maybe\n", r"use_peft: expected true or false"),
        ("run_name: 7\n", r"run_name: expected a string, got 7 \(int\) \(quote it in YAML\)"),
        ("learning_rate: .inf\n", r"learning_rate: expected a finite number"),
        ("reward_weights: [1, x]\n", r"reward_weights: expected a number, got 'x'"),
        ("num_generation: 8\n", r"unknown field `num_generation`; did you mean `num_generations`\?"),
        ("learnig_rate: 1.0e-4\n", r"unknown field `learnig_rate`; did you mean `learning_rate`\?"),
    ],
)
def test_yaml_types_and_names_are_checked_naming_the_file(tmp_path, text, message):
    config = yaml_file(tmp_path, text)
    with pytest.raises(ConfigError, match=f"^{config}: {message}"):
        parse_config(GRPO, ["--config", str(config)])


@pytest.mark.parametrize(
    "text, message",
    [
        ("num_generations: 1\n", "num_generations must be at least 2"),
        ("top_p: 0\n", r"top_p must be > 0 and <= 1, got 0.0"),
        ("max_bad_video_fraction: 1.5\n", r"max_bad_video_fraction must be >= 0 and <= 1"),
        ("seed: -1\n", "seed must be >= 0"),
        ("temperature: 0\n", "temperature must be > 0"),
        ("loss_type: dapoo\n", r"loss_type: 'dapoo' is not one of .*; did you mean `dapo`\?"),
        ("rollout_backend: ray\n", r"rollout_backend: 'ray' is not one of hf, ray-hf, vllm, ray-vllm"),
        ("invert_tasks: [vc, tvg]\n", r"invert_tasks: 'tvg' is not one of vc, ar, vd"),
        (
            "video_min_frames: 10\nvideo_max_frames: 4\n",
            r"video_min_frames \(10\) is larger than video_max_frames",
        ),
        ("invert_task_weights: [1, 2]\n", "invert_task_weights has 2 entries for 3 invert_tasks"),
    ],
)
def test_ranges_and_choices_are_checked_naming_the_file(tmp_path, text, message):
    config = yaml_file(tmp_path, text)
    with pytest.raises(ConfigError, match=f"^{config}: {message}"):
        parse_config(GRPO, ["--config", str(config)])


def test_the_command_line_is_checked_and_named_as_such(tmp_path):
    config = yaml_file(tmp_path, "num_generations: 4\n")
    with pytest.raises(
        ConfigError, match=r"^command line --num_generations: num_generations must be at least 2"
    ):
        parse_config(GRPO, ["--config", str(config), "--num_generations", "1"])
    with pytest.raises(
        ConfigError, match=r"^command line: argument --num_generations.*invalid int value: '2.5'"
    ):
        parse_config(GRPO, ["--num_generations", "2.5"])
    with pytest.raises(
        ConfigError, match=r"^command line: argument --learning_rate.*invalid float value: 'true'"
    ):
        parse_config(GRPO, ["--learning_rate", "true"])


@pytest.mark.parametrize(
    "flag, closest",
    [
        ("--num_generation", "--num_generations"),
        ("--learnig_rate", "--learning_rate"),
        ("--max_step", "--max_steps"),
    ],
)
def test_a_mistyped_or_abbreviated_flag_is_refused_with_the_closest_field(flag, closest):
    """argparse's prefix matching would take --num_generation 4 for --num_generations 4 and train with it."""
    with pytest.raises(
        ConfigError, match=f"^command line: unknown flag {flag}; did you mean `{closest}`\\?$"
    ):
        parse_config(GRPO, ["--config", TINY, flag, "4"])


def test_yaml_numbers_written_as_yaml_strings_still_parse(tmp_path):
    """YAML 1.1 reads 5e-5 (no dot) as a string; argparse would convert it, so the parser does too."""
    config = yaml_file(tmp_path, "learning_rate: 5e-5\nreport_to: none\nnum_generations: '4'\n")
    *_, args = parse_config(GRPO, ["--config", str(config)])
    assert args.learning_rate == 5e-5 and args.report_to == [] and args.num_generations == 4


def test_an_eval_read_of_a_training_config_passes_over_other_fields(tmp_path):
    config = yaml_file(tmp_path, "num_generations: 4\nvideo_fps: 1\n")
    (data,) = parse_config((DataArguments,), ["--config", str(config)], ignore_unknown=True)
    assert data.video_fps == 1.0
    with pytest.raises(ConfigError, match="video_fps: expected a number"):
        parse_config((DataArguments,), ["--config", str(yaml_file(tmp_path, "video_fps: fast\n"))], True)


def test_every_shipped_config_parses():
    for config in sorted((REPO / "recipes/configs").glob("*.yaml")):
        types = SFT if config.name.startswith("sft_") else GRPO
        parse_config(types, ["--config", str(config)])


def test_the_range_and_choice_tables_name_real_fields_and_match_their_sources():
    from invert4tvg.data.formats import FORMATS
    from invert4tvg.data.validation import OVERSHOOT_POLICIES
    from invert4tvg.grpo.loss import IMPORTANCE_SAMPLING_LEVELS, LOSS_TYPES, SCALE_REWARDS
    from invert4tvg.grpo.sampling_correction import MODES
    from invert4tvg.policy.loading import HEADS
    from invert4tvg.tasks.masking import MASK_MODES
    from invert4tvg.tasks.prompts import INVERSION_TASKS
    from invert4tvg.tasks.sampler import MODES as TASK_MODES

    fields = {f.name for t in (*GRPO, SFTArguments) for f in dataclasses.fields(t)}
    assert set(RANGES) <= fields and set(CHOICES) <= fields
    sources = {
        "dataset_format": FORMATS, "span_overshoot": OVERSHOOT_POLICIES, "loss_type": LOSS_TYPES,
        "scale_rewards": SCALE_REWARDS, "importance_sampling_level": IMPORTANCE_SAMPLING_LEVELS,
        "vllm_importance_sampling_mode": MODES, "head": tuple(HEADS), "verb_mask": MASK_MODES,
        "invert_tasks": INVERSION_TASKS, "invert_sft_tasks": INVERSION_TASKS, "task_sampling": TASK_MODES,
    }  # fmt: skip
    for name, source in sources.items():
        assert set(CHOICES[name]) == set(source), name


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_no_invert4tvg_subcommand_takes_abbreviations(capsys):
    parsers = list(_parsers(cli.build_parser()))
    assert len(parsers) > 10 and all(not p.allow_abbrev for p in parsers)
    with pytest.raises(SystemExit) as stop:
        cli.main(["data", "check", "--format", "tvg-json", "--annot", "a.json"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("invert4tvg data check: error:")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _stderr_lines(result: subprocess.CompletedProcess) -> list[str]:
    """stderr without accelerate's own notice about defaulted launch values (issue 28 item 9, not ours)."""
    lines, notice = [], False
    for line in result.stderr.splitlines():
        if line.startswith("The following values were not passed to `accelerate launch`"):
            notice = True
        elif notice and (line.startswith(("\t", " ")) or line.startswith("To avoid this warning")):
            continue
        else:
            notice = False
            lines.append(line)
    return [line for line in lines if line.strip()]


PYTHON = [sys.executable, str(REPO / "recipes/grpo_qwen25vl.py")]
TRAIN = [sys.executable, "-m", "invert4tvg.cli", "train"]
ACCELERATE = [str(Path(sys.executable).parent / "accelerate"), "launch", "-q", "--cpu", "--num_processes", "1",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              str(REPO / "recipes/grpo_qwen25vl.py")]  # fmt: skip


@pytest.mark.parametrize(
    "launcher, mistake",
    [(PYTHON, "typo"), (TRAIN, "taken"), (ACCELERATE, "typo"), (ACCELERATE, "empty")],
    ids=[
        "python-typo",
        "invert4tvg-train-output-dir",
        "accelerate-launch-q-typo",
        "accelerate-launch-q-data",
    ],
)
def test_a_user_error_is_one_line_on_stderr_under_every_launcher(
    launcher, mistake, tiny_bench, tiny_model_dir, tmp_path
):
    """A mistake in the flags, the output_dir or the data: one line, no traceback, whatever started the recipe."""
    out, taken = tmp_path / "run", tmp_path / "taken"
    taken.mkdir()
    (taken / "train.log").write_text("another run's file\n")
    train = small_train(tiny_bench, tmp_path / "train.json", 2)
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    extra, expected = {
        "typo": (
            ["--num_generation", "4"],
            "error: command line: unknown flag --num_generation; did you mean",
        ),
        "taken": (["--output_dir", str(taken)], f"error: output_dir {taken} is not empty"),
        "empty": (["--train_annotations", str(empty)], f"error: {empty}, file: no_records"),
    }[mistake]
    args = grpo_args(tiny_bench, train, tiny_model_dir, out, *extra)
    result = subprocess.run(
        [*launcher, *args], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
    )
    lines = _stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    # accelerate launch -q exits 1 for any failed child (its own choice); the recipe itself exits 2
    assert result.returncode == (1 if launcher is ACCELERATE else 2)
    assert not out.exists()
