"""TRL 1.16's meanings and names: the batch counts completions, gradient_accumulation_steps accumulates, the log
uses TRL's keys, and every default that differs from GRPOConfig is in docs/training.md's table."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
import trl
from trl import GRPOConfig

from invert4tvg.config import GRPOArguments, ModelArguments, SFTArguments, parse_config
from invert4tvg.config_checks import ConfigError
from invert4tvg.grpo.reward_set import RewardSet
from invert4tvg.grpo.step_metrics import reward_metrics
from invert4tvg.policy.loading import load_policy
from tests.test_configs import CONFIGS, GRPO, SFT
from tests.test_grpo_models import make_trainer

REPO = Path(__file__).resolve().parents[1]
TRL_TRAINER = Path(trl.__file__).parent / "trainer" / "grpo_trainer.py"


def test_the_batch_counts_completions_as_in_trl():
    args = GRPOArguments(num_generations=8, per_device_train_batch_size=4, gradient_accumulation_steps=4)
    assert args.records_per_step == 2  # 16 completions per device per step = 2 prompts x G 8
    assert SFTArguments(per_device_train_batch_size=4, gradient_accumulation_steps=3).records_per_step == 12
    with pytest.raises(ConfigError, match=r"12 completions .* not a multiple of num_generations \(8\).*TRL"):
        GRPOArguments(num_generations=8, per_device_train_batch_size=4, gradient_accumulation_steps=3)
    with pytest.raises(ConfigError, match="gradient_accumulation_steps must be at least 1"):
        GRPOArguments(gradient_accumulation_steps=0)


# Prompts per device per step and the micro-batch (sequences per forward/backward) each shipped GRPO config had
# before per_device_train_batch_size changed unit: the same training, in TRL's words.
EFFECTIVE = {
    "invert4tvg_qwen25vl_3b.yaml": (1, 8),
    "time_r1_qwen25vl_3b.yaml": (1, 8),
    "invert4tvg_qwen25vl_7b.yaml": (1, 4),
    "time_r1_qwen25vl_7b.yaml": (1, 4),
    "tiny_cpu.yaml": (4, 32),
    "lookalike_cpu.yaml": (4, 32),
}


def test_every_shipped_config_keeps_its_batch():
    grpo = sorted(p.name for p in CONFIGS.glob("*.yaml") if not p.name.startswith("sft"))
    assert grpo == sorted(EFFECTIVE)
    for name, (prompts, micro) in EFFECTIVE.items():
        *_, args = parse_config(GRPO, ["--config", str(CONFIGS / name)])
        assert (args.records_per_step, args.per_device_train_batch_size) == (prompts, micro), name
    for path in CONFIGS.glob("sft_*.yaml"):  # SFT counted examples per forward/backward already, as TRL does
        *_, args = parse_config(SFT, ["--config", str(path)])
        assert (
            args.gradient_accumulation_steps == 1
            and args.records_per_step == args.per_device_train_batch_size
        )


def _one_step(tiny_model_dir, tiny_bench, tiny_sampling, tmp_path, **options):
    policy = load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir), freeze_vision_tower=False))
    trainer = make_trainer(
        policy,
        tiny_bench,
        tiny_sampling,
        tmp_path / str(options),
        shared_prefix=False,
        max_steps=1,
        **options,
    )
    grads = []
    step = trainer.optimizer.step

    def recording_step(*a, **k):
        grads.append({n: p.grad.clone() for n, p in policy.model.named_parameters() if p.grad is not None})
        return step(*a, **k)

    trainer.optimizer.step = recording_step
    torch.manual_seed(0)
    return trainer.train_step(), grads


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_gradient_accumulation_equals_one_big_micro_batch(
    tiny_model_dir, tiny_bench, tiny_sampling, tmp_path, loss_type
):
    """2 prompts x 2 completions as 2 micro-batches of 2 (accumulated) or one of 4: one update, same gradient."""
    args = (tiny_model_dir, tiny_bench, tiny_sampling, tmp_path)
    small, small_grads = _one_step(
        *args, per_device_train_batch_size=2, gradient_accumulation_steps=2, loss_type=loss_type
    )
    big, big_grads = _one_step(
        *args, per_device_train_batch_size=4, gradient_accumulation_steps=1, loss_type=loss_type
    )
    assert small["sequences"] == big["sequences"] == 4
    assert len(small_grads) == len(big_grads) == 1  # one optimizer update per step either way
    assert small["loss"] == pytest.approx(big["loss"], rel=1e-4, abs=1e-7)
    for name, grad in big_grads[0].items():
        assert torch.allclose(small_grads[0][name], grad, rtol=1e-3, atol=1e-6), name


# Keys we log under TRL 1.16's names: each must be a key TRL's GRPOTrainer logs.
TRL_KEYS = (
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "completions/mean_length",
    "completions/min_length",
    "completions/max_length",
    "completions/clipped_ratio",
    "kl",
    "clip_ratio/low_mean",
    "clip_ratio/high_mean",
    "clip_ratio/region_mean",
    "sampling/sampling_logp_difference/mean",
    "sampling/importance_sampling_ratio/mean",
)


def test_logged_keys_are_trls(tiny_model_dir, tiny_bench, tiny_sampling, tmp_path):
    source = TRL_TRAINER.read_text()
    for key in TRL_KEYS:
        assert f'"{key}"' in source, f"TRL {trl.__version__} no longer logs {key}"
    metrics, _ = _one_step(tiny_model_dir, tiny_bench, tiny_sampling, tmp_path, per_device_train_batch_size=4)
    assert "learning_rate" in metrics and "lr" not in metrics  # transformers' Trainer logs learning_rate
    for key in TRL_KEYS[:11]:
        assert key in metrics, key
    for old in ("completion_len", "clip_frac", "zero_std_frac", "truncated_frac"):
        assert old not in metrics


def test_reward_keys_have_the_composite_and_no_doubled_names():
    reward_set = RewardSet(["invert4tvg", "format"])
    completions = ["<think>x</think> <answer>1.0 to 2.0</answer>", "<think>y</think> <answer>a verb</answer>"]
    columns = {
        "task": ["tvg", "vc"],
        "query": ["a person opens a door", "a person opens a door"],
        "masked_query": ["", "a person [VERB] a door"],
        "masked_verbs": [[], ["open"]],
        "start": [1.0, 1.0],
        "end": [2.0, 2.0],
        "duration": [10.0, 10.0],
        "record_id": ["a", "a"],
    }
    _, components = reward_set(completions, **columns)
    row = reward_metrics(components, columns["task"])
    alone, _ = RewardSet(["invert4tvg"])(completions, **columns)
    assert row["rewards/invert4tvg/mean"] == pytest.approx(sum(alone) / 2)  # the composite's own total
    assert "rewards/format/mean" in row and "rewards/iou/mean" in row and "rewards/vc/mean" in row
    # the per-task split exists for rewards that score several tasks, never as rewards/vc/vc/mean
    assert "rewards/invert4tvg/tvg/mean" in row and "rewards/format/vc/mean" in row
    doubled = [k for k in row if re.fullmatch(r"rewards/(\w+)/\1/mean", k)]
    assert not doubled and "rewards/iou/tvg/mean" not in row


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def test_every_default_that_differs_from_grpo_config_is_in_the_table():
    """docs/training.md's one table names every field whose default differs from TRL's GRPOConfig."""
    text = (REPO / "docs" / "training.md").read_text()
    section = text.split("## Differences from TRL's GRPOConfig", 1)[1].split("\n## ", 1)[0]
    in_table = set(re.findall(r"^\| `(\w+)`", section, flags=re.M))
    trl_defaults = {f.name: _default(f) for f in dataclasses.fields(GRPOConfig)}
    ours = {f.name: _default(f) for cls in GRPO for f in dataclasses.fields(cls)}
    differs = set()
    for name, value in ours.items():
        theirs = trl_defaults.get(name, dataclasses.MISSING)
        if theirs is dataclasses.MISSING:
            continue
        if isinstance(theirs, list | tuple) and isinstance(value, list | tuple):
            theirs, value = list(theirs), list(value)
        if value != theirs:
            differs.add(name)
    assert {"learning_rate", "beta", "lr_scheduler_type"} <= differs  # the comparison did read GRPOConfig
    assert differs <= in_table, f"missing from the table: {sorted(differs - in_table)}"
    assert in_table <= set(ours), f"the table names fields that do not exist: {sorted(in_table - set(ours))}"


def _sft_step(tiny_model_dir, tiny_bench, tiny_sampling, tmp_path, **options):
    from accelerate import Accelerator

    from invert4tvg.data.formats import load_records
    from invert4tvg.sft.trainer import SFTTrainer
    from invert4tvg.tasks import build_task_instance

    policy = load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir)))
    records = load_records("tvg-json", tiny_bench / "train.json", video_dir=tiny_bench / "videos").records[:4]
    args = SFTArguments(output_dir=str(tmp_path / str(options)), max_steps=1, report_to=[], seed=0, **options)
    trainer = SFTTrainer(
        policy,
        records,
        lambda record, task: build_task_instance(record, task, tiny_sampling),
        args,
        Accelerator(cpu=True),
    )
    grads = []
    step = trainer.optimizer.step

    def recording_step(*a, **k):
        grads.append({n: p.grad.clone() for n, p in policy.model.named_parameters() if p.grad is not None})
        return step(*a, **k)

    trainer.optimizer.step = recording_step
    return trainer.train()[0], grads


def test_sft_gradient_accumulation_equals_one_batch(tiny_model_dir, tiny_bench, tiny_sampling, tmp_path):
    """4 examples as 2 accumulated micro-batches of 2 or one of 4: the same loss (token mean) and gradient."""
    args = (tiny_model_dir, tiny_bench, tiny_sampling, tmp_path)
    small, small_grads = _sft_step(*args, per_device_train_batch_size=2, gradient_accumulation_steps=2)
    big, big_grads = _sft_step(*args, per_device_train_batch_size=4, gradient_accumulation_steps=1)
    assert small["target_tokens"] == big["target_tokens"] > 0
    assert small["loss"] == pytest.approx(big["loss"], rel=1e-5)
    assert len(small_grads) == len(big_grads) == 1
    for name, grad in big_grads[0].items():
        assert torch.allclose(small_grads[0][name], grad, rtol=1e-3, atol=1e-6), name
