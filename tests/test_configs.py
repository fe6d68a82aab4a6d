"""Every shipped config parses (unknown keys are errors) and says what the paper says."""

from __future__ import annotations

from pathlib import Path

import pytest

from invert4tvg.config import (
    DataArguments,
    GRPOArguments,
    ModelArguments,
    SFTArguments,
    TaskArguments,
    parse_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
GRPO = (ModelArguments, DataArguments, TaskArguments, GRPOArguments)
SFT = (ModelArguments, DataArguments, TaskArguments, SFTArguments)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_config_parses(path):
    types = SFT if path.name.startswith("sft") else GRPO
    parse_config(types, ["--config", str(path)])


@pytest.mark.parametrize("size", ["3b", "7b"])
def test_paper_settings(size):
    model, data, tasks, args = parse_config(
        GRPO, ["--config", str(CONFIGS / f"invert4tvg_qwen25vl_{size}.yaml")]
    )
    assert model.model_name_or_path == f"Qwen/Qwen2.5-VL-{size.upper()}-Instruct"
    assert tasks.tvg_probability == 0.8 and tasks.invert_tasks == ["vc", "ar", "vd"]
    assert (args.learning_rate, args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay) == (
        5e-5,
        0.9,
        0.999,
        1e-8,
        0.0,
    )
    assert (args.num_train_epochs, args.num_generations, args.max_completion_length, args.beta) == (
        2,
        8,
        1024,
        0.04,
    )
    assert data.video_fps == 2.0 and data.video_total_pixels == 3584 * 28 * 28
    _, _, baseline, baseline_args = parse_config(
        GRPO, ["--config", str(CONFIGS / f"time_r1_qwen25vl_{size}.yaml")]
    )
    assert baseline.tvg_probability == 1.0 and baseline_args.setting == "time_r1"


def test_command_line_overrides_the_file():
    *_, args = parse_config(GRPO, ["--config", str(CONFIGS / "tiny_cpu.yaml"), "--learning_rate", "0.5"])
    assert args.learning_rate == 0.5


def test_unknown_key_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1.0e-4\nlearnig_rate: 2.0e-4\n")
    with pytest.raises(ValueError, match="learnig_rate"):
        parse_config(GRPO, ["--config", str(bad)])


@pytest.mark.parametrize("name", ["tiny_cpu.yaml", "sft_tiny_cpu.yaml"])
def test_tiny_configs_use_the_short_prompts(name, monkeypatch):
    from invert4tvg.builders import load_templates

    monkeypatch.chdir(CONFIGS.parents[1])  # the configs' relative paths assume the repository root
    types = SFT if name.startswith("sft") else GRPO
    _, _, tasks, _ = parse_config(types, ["--config", str(CONFIGS / name)])
    templates = load_templates(tasks)
    assert templates.render("tvg", query="the red circle grows.").startswith("the red circle grows.")
    assert "{masked_query}" in templates.vc


def test_missing_prompt_file_names_the_path(tmp_path, monkeypatch):
    from invert4tvg.builders import load_templates
    from invert4tvg.errors import UserError

    monkeypatch.chdir(tmp_path)
    # a UserError: `invert4tvg eval` run from the wrong directory prints this one line, not a traceback
    with pytest.raises(UserError, match=r"recipes/configs/prompts/tiny\.yaml") as missing:
        load_templates(TaskArguments(prompt_templates="recipes/configs/prompts/tiny.yaml"))
    assert isinstance(missing.value, FileNotFoundError)


def test_unknown_invert_sft_task_is_a_config_error():
    with pytest.raises(ValueError, match="invert_sft_tasks"):
        parse_config(SFT, ["--config", str(CONFIGS / "sft_tiny_cpu.yaml"), "--invert_sft_tasks", "vc", "tvg"])


def test_hidden_state_head_configs_say_what_their_papers_say():
    loc, loc_data, _, loc_args = parse_config(SFT, ["--config", str(CONFIGS / "sft_loc_qwen25vl_7b.yaml")])
    assert loc.head == "loc" and loc.head_loss_weights == [2.0, 5.0, 2.0]  # VideoExpert's code: BCE, L1, GIoU
    assert (loc_data.video_min_frames, loc_data.video_max_frames) == (100, 100)  # 100 frames per video
    assert loc_args.per_device_train_batch_size * 8 == 128 and loc_args.max_completion_length == 512
    meco, meco_data, _, meco_args = parse_config(
        SFT, ["--config", str(CONFIGS / "sft_meco_qwen25vl_7b.yaml")]
    )
    assert meco.head == "meco" and meco.head_width == 3072  # projector output size (Table 8)
    assert (meco.lora_r, meco.lora_alpha, meco.lora_dropout) == (128, 256, 0.05)
    assert meco.lora_target_modules == ["q_proj", "v_proj", "o_proj"]
    assert (meco_args.learning_rate, meco_args.num_train_epochs, meco_args.warmup_ratio) == (5e-5, 1, 0.03)
    assert meco_args.adam_beta2 == 0.997 and meco_data.video_fps == 2.0
