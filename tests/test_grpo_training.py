"""The GRPO loop end to end on the tiny model: video tensors reach every pass, runs resume exactly, bad input is
reported, and the recipe writes what the report reads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

import rewards
from invert4tvg.config import GRPOArguments, ModelArguments
from invert4tvg.data.formats import load_records
from invert4tvg.grpo.loss import LossConfig, grpo_loss
from invert4tvg.grpo.reward_set import RewardSet
from invert4tvg.grpo.trainer import GRPOTrainer
from invert4tvg.modeling.processing import select_inputs
from invert4tvg.policy.loading import load_policy
from invert4tvg.rollout.hf import HFEngine
from invert4tvg.tasks import TaskSampler
from invert4tvg.workflows.recipe_loader import load_recipe

REPO = Path(__file__).resolve().parents[1]


def completion_length(completions, **columns):
    """A reward with spread even on an untrained model (which scores 0 on every built-in), so updates happen."""
    return [len(c) / 100 for c in completions]


if "completion_length" not in rewards.available():
    rewards.register("completion_length", completion_length)
TIMING_KEYS = ("time/", "tokens_per_s")


def subset(bench: Path, out: Path, n: int) -> Path:
    """A train file with exactly ``n`` queries from the benchmark's train split."""
    data = json.loads((bench / "train.json").read_text())
    kept, total = {}, 0
    for vid, entry in data.items():
        take = min(n - total, len(entry["sentences"]))
        if take <= 0:
            break
        kept[vid] = {
            **entry,
            "timestamps": entry["timestamps"][:take],
            "sentences": entry["sentences"][:take],
        }
        total += take
    out.write_text(json.dumps(kept))
    return out


def recipe_args(bench: Path, train: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(REPO / "recipes/configs/tiny_cpu.yaml"),
        "--model_name_or_path",
        str(model),
        "--train_annotations",
        str(train),
        "--val_annotations",
        "",
        "--test_annotations",
        "",
        "--video_dir",
        str(bench / "videos"),
        "--frame_cache_dir",
        str(out.parent / "frame-cache"),
        "--output_dir",
        str(out),
        "--per_device_train_batch_size",
        "16",  # completions: 4 prompts x 4
        "--num_generations",
        "4",
        "--max_completion_length",
        "12",
        "--report_to",
        "none",
        "--reward_funcs",
        "invert4tvg",
        "completion_length",
        *extra,
    ]


@pytest.fixture(scope="module")
def grpo_recipe():
    return load_recipe("grpo_qwen25vl")


def test_resume_is_exact_across_an_epoch_boundary(grpo_recipe, tiny_bench, tiny_model_dir, tmp_path):
    train = subset(tiny_bench, tmp_path / "train8.json", 8)  # 8 records, batch 4: the epoch ends at step 2
    straight = tmp_path / "straight"
    grpo_recipe.main(
        recipe_args(tiny_bench, train, tiny_model_dir, straight, "--max_steps", "4", "--save_steps", "2")
    )
    resumed = tmp_path / "resumed"
    grpo_recipe.main(
        recipe_args(
            tiny_bench,
            train,
            tiny_model_dir,
            resumed,
            "--max_steps",
            "4",
            "--resume_from_checkpoint",
            str(straight / "checkpoints/step_2"),
        )
    )
    a = load_file(straight / "final/model.safetensors")
    b = load_file(resumed / "final/model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    initial = load_file(tiny_model_dir / "model.safetensors")
    assert not all(torch.equal(a[k], initial[k]) for k in a)  # training moved the weights

    def rows(run: Path) -> dict[int, dict]:
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: {k: v for k, v in r.items() if not k.startswith(TIMING_KEYS)} for r in lines}

    straight_rows, resumed_rows = rows(straight), rows(resumed)
    assert sorted(straight_rows) == [1, 2, 3, 4]
    assert sorted(resumed_rows) == [3, 4]
    for step in (3, 4):
        assert resumed_rows[step] == straight_rows[step]
    assert straight_rows[3]["epoch"] > 1.0  # step 3 is in the second epoch


def test_lora_run_checkpoints_adapters_only_and_resumes(grpo_recipe, tiny_bench, tiny_model_dir, tmp_path):
    train = subset(tiny_bench, tmp_path / "train8.json", 8)
    run = tmp_path / "lora"
    lora = [
        "--use_peft",
        "true",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--lora_dropout",
        "0",
        "--beta",
        "0.04",
    ]
    grpo_recipe.main(
        recipe_args(tiny_bench, train, tiny_model_dir, run, "--max_steps", "2", "--save_steps", "1", *lora)
    )
    ckpt = run / "checkpoints/step_2/model"
    assert (ckpt / "adapter_model.safetensors").exists()
    assert not (ckpt / "model.safetensors").exists()
    adapters = load_file(ckpt / "adapter_model.safetensors")
    assert adapters and all("lora_" in k for k in adapters)
    assert not any("visual" in k for k in adapters)
    resumed = tmp_path / "lora-resumed"
    grpo_recipe.main(
        recipe_args(
            tiny_bench,
            train,
            tiny_model_dir,
            resumed,
            "--max_steps",
            "2",
            "--resume_from_checkpoint",
            str(run / "checkpoints/step_1"),
            *lora,
        )
    )
    b = load_file(resumed / "final/adapter_model.safetensors")
    a = load_file(run / "final/adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


class VisionCalls:
    """Records the pixel tensors every vision-tower forward receives."""

    def __init__(self, *models: torch.nn.Module) -> None:
        self.calls: list[tuple[str, torch.Tensor]] = []
        self.handles = [
            m.model.visual.register_forward_pre_hook(self._hook(name), with_kwargs=True)
            for name, m in zip(("policy", "reference"), models)
        ]

    def _hook(self, name: str):
        def hook(module, args, kwargs):
            pixels = args[0] if args else kwargs["hidden_states"]
            self.calls.append((name, pixels.detach().clone()))

        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def test_video_tensors_reach_old_reference_and_current_passes(
    tiny_bench, tiny_model_dir, tiny_sampling, tmp_path
):
    policy = load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir), freeze_vision_tower=False))
    records = load_records("tvg-json", tiny_bench / "train.json", video_dir=tiny_bench / "videos").records[:2]
    sampler = TaskSampler(p=1.0, seed=0)
    args = GRPOArguments(
        output_dir=str(tmp_path),
        num_generations=2,
        num_iterations=2,
        beta=0.04,
        max_completion_length=6,
        per_device_train_batch_size=4,  # 2 prompts x 2 completions
        max_steps=1,
        report_to=[],
    )
    engine = HFEngine(policy.model, policy.processor)
    trainer = GRPOTrainer(
        policy,
        engine,
        RewardSet(["invert4tvg"]),
        sampler,
        lambda recs, tasks: sampler.make_instances(recs, tasks, sampling=tiny_sampling),
        records,
        args,
        Accelerator(cpu=True),
    )
    calls = VisionCalls(policy.model, trainer.ref_model)
    captured = {}
    prepare = trainer.prepare_batch

    def spy(rollouts, advantages):
        # shared_prefix (the default): each group's video once, i.e. the pixels of the first row of every group
        first_rows = range(0, len(rollouts.batch), args.num_generations)
        captured["pixels"] = select_inputs(rollouts.batch.inputs, first_rows)["pixel_values_videos"].clone()
        calls.calls.clear()  # keep only the passes of the update, not generation
        return prepare(rollouts, advantages)

    trainer.prepare_batch = spy
    trainer.train_step()
    calls.close()
    # old-policy pass, reference pass, then one current pass per iteration (num_iterations=2)
    assert [name for name, _ in calls.calls] == ["policy", "reference", "policy", "policy"]
    for _, pixels in calls.calls:
        assert torch.equal(pixels, captured["pixels"])


def test_gradients_depend_on_the_video(tiny_bench, tiny_model_dir, tiny_sampling):
    from invert4tvg.data.video import decode_video
    from invert4tvg.rollout.base import SamplingParams

    policy = load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir), freeze_vision_tower=False))
    records = load_records("tvg-json", tiny_bench / "train.json", video_dir=tiny_bench / "videos").records
    instance = TaskSampler(p=1.0).make_instances(records[:1], ["tvg"], sampling=tiny_sampling)[0]
    video = decode_video(instance.video)
    # The same clip played backwards: identical frames per position set, opposite direction of change.
    other_video = dataclasses.replace(video, frames=video.frames[::-1].copy())
    request = policy.rollout_request(instance.messages, video, 4)
    completions = HFEngine(policy.model, policy.processor).generate(
        [request], SamplingParams(max_tokens=6, seed=0)
    )

    def grads(batch):
        logps = policy.completion_logprobs(policy.model, batch)
        mask = batch.completion_mask.float()
        loss = grpo_loss(logps, logps.detach(), torch.tensor([1.0, -1.0, 0.5, -0.5]), mask, LossConfig())
        policy.model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in policy.model.parameters() if p.grad is not None])

    batch = policy.sequence_batch([request], completions)
    swapped = policy.sequence_batch([policy.rollout_request(instance.messages, other_video, 4)], completions)
    assert torch.equal(batch.inputs["input_ids"], swapped.inputs["input_ids"])
    g_same, g_again, g_other = grads(batch), grads(batch), grads(swapped)
    torch.testing.assert_close(g_same, g_again)
    assert not torch.allclose(g_same, g_other)
