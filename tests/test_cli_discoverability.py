"""What a new user finds from the command line: --version, train --help with every recipe field, env, recipes from
the working directory, one-line errors for a missing model and the flash-attn fallback."""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

import invert4tvg
from invert4tvg.commands import train
from invert4tvg.config import DataArguments, GRPOArguments, ModelArguments, TaskArguments
from invert4tvg.policy.loading import attention, load_policy

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "invert4tvg.cli", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_version_and_train_help_list_the_recipe_fields():
    assert cli("--version").stdout.strip() == f"invert4tvg {invert4tvg.__version__}"
    shown = cli("train", "--help")
    assert shown.returncode == 0, shown.stderr
    out = re.sub(r"\s+", " ", shown.stdout)
    assert "--sft" in out and "recipes/grpo_qwen25vl.py" in out
    for field, default in (
        ("beta", "0.04"),
        ("num_generations", "8"),
        ("learning_rate", "5e-05"),
        ("seed", "42"),
    ):
        assert re.search(rf"--{field} \S+ .+?\(default: {re.escape(default)}\)", out), field
    assert "--config CONFIG YAML file of these fields" in out  # TrlParser's own --config, listed too
    # argparse %-formats help text: a bare "%" in a field's help printed the argument's dict in its place
    assert "object at 0x" not in out
    unwrapped = re.sub(r"\s+", "", shown.stdout)  # argparse wraps lines at spaces and hyphens
    for dtype in (ModelArguments, DataArguments, TaskArguments, GRPOArguments):
        for f in dataclasses.fields(dtype):
            assert re.sub(r"\s+", "", f.metadata["help"]) in unwrapped, f.name


def test_env_reports_versions_devices_and_optional_parts():
    out = cli("env").stdout
    assert f"- invert4tvg: {invert4tvg.__version__}" in out
    assert re.search(r"^- torch: \d", out, re.M) and re.search(r"^- CUDA: ", out, re.M)
    assert re.search(r"^- NLP backend: \S", out, re.M)
    assert re.search(r"^- vllm: (not installed|\S+) \(rollout_backend vllm", out, re.M)


def test_train_prefers_the_working_directory_recipes(tmp_path, monkeypatch):
    assert train.recipe_path("grpo_qwen25vl") == REPO / "recipes" / "grpo_qwen25vl.py"
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "grpo_qwen25vl.py").write_text("def main(argv):\n    print('local copy', argv)\n")
    monkeypatch.chdir(tmp_path)
    assert train.recipe_path("grpo_qwen25vl") == tmp_path / "recipes" / "grpo_qwen25vl.py"
    done = cli("train", "--config", "c.yaml", "--max_steps", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "local copy ['--config', 'c.yaml', '--max_steps', '3']" in done.stdout


def test_a_missing_local_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model runs/nowhere/final: no such directory"):
        load_policy(ModelArguments(model_name_or_path="runs/nowhere/final"))


def test_eval_names_an_unknown_task_in_one_line():
    done = cli("eval", "--model", "runs/nowhere/final", "--tasks", "vc,tvg")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "invert4tvg eval: error: --tasks: unknown task 'tvg' (choose from vc, ar, vd, comma-separated; '' for "
        "grounding only)"
    ]


def test_flash_attention_falls_back_to_sdpa_without_flash_attn(caplog):
    pytest.importorskip("torch")
    import importlib.util

    if importlib.util.find_spec("flash_attn") is not None:
        assert attention("flash_attention_2") == "flash_attention_2"
        return
    with caplog.at_level(logging.WARNING):
        assert attention("flash_attention_2") == "sdpa"
    assert "flash-attn is not installed; using sdpa" in caplog.text
    assert attention("eager") == "eager"
