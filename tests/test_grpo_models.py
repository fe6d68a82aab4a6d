"""The models the GRPO trainer runs: where they live, in which precision the trained weights are kept, which
reference the KL pulls towards, and whether dropout makes passes over the same weights disagree."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from accelerate.scheduler import AcceleratedScheduler
from accelerate.state import AcceleratorState

from invert4tvg.config import GRPOArguments, ModelArguments, SFTArguments
from invert4tvg.data.formats import load_records
from invert4tvg.data.video import decode_video
from invert4tvg.grpo.trainer import GRPOTrainer
from invert4tvg.policy.loading import load_policy
from invert4tvg.rollout.base import Completion
from invert4tvg.rollout.hf import HFEngine
from invert4tvg.tasks import TaskSampler


def distinct_chars(completions, **columns):
    """A reward with spread on an untrained model, so every step has non-zero advantages."""
    return [len(set(c)) / 10 for c in completions], {}


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state; a test that needs other mixed precision starts and ends clean."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def make_trainer(policy, tiny_bench, tiny_sampling, tmp_path, accelerator=None, **overrides) -> GRPOTrainer:
    records = load_records("tvg-json", tiny_bench / "train.json", video_dir=tiny_bench / "videos").records[:4]
    sampler = TaskSampler(p=1.0, seed=0)
    options = dict(
        output_dir=str(tmp_path / "run"),
        num_generations=2,
        beta=0.04,
        max_completion_length=6,
        per_device_train_batch_size=4,  # 2 prompts x 2 completions
        max_steps=2,
        report_to=[],
        seed=0,
    )
    return GRPOTrainer(
        policy,
        HFEngine(policy.model, policy.processor),
        distinct_chars,
        sampler,
        lambda recs, tasks: sampler.make_instances(recs, tasks, sampling=tiny_sampling),
        records,
        GRPOArguments(**{**options, **overrides}),
        accelerator or Accelerator(cpu=True),
    )


def fixed_batch(policy, trainer):
    """Two completions (fixed token ids) of the first record's grounding prompt."""
    instance = trainer.build_instances(trainer.stream.items[:1], ["tvg"])[0]
    request = policy.rollout_request(instance.messages, decode_video(instance.video), 2)
    completions = [
        [
            Completion([50, 60, 70, 80], "", [0.0] * 4, "stop", 0),
            Completion([90, 41], "", [0.0] * 2, "stop", 0),
        ]
    ]
    return policy.sequence_batch([request], completions).to(trainer.accelerator.device)


class MetaAccelerator(Accelerator):
    """An accelerator whose device is not the CPU the model is loaded on (the situation of every GPU run)."""

    @property
    def device(self) -> torch.device:
        return torch.device("meta")


def test_every_model_the_trainer_runs_is_on_the_accelerator_device(
    tiny_model_dir, tiny_bench, tiny_sampling, tmp_path
):
    policy = load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir), freeze_vision_tower=False))
    trainer = make_trainer(policy, tiny_bench, tiny_sampling, tmp_path, MetaAccelerator(cpu=True))
    assert trainer.ref_model is not None
    for label, module in {"policy": trainer.model, "reference": trainer.ref_model}.items():
        devices = {t.device.type for t in [*module.parameters(), *module.buffers()]}
        assert devices == {"meta"}, f"{label} on {devices}"
    assert not trainer.ref_model.training and not any(p.requires_grad for p in trainer.ref_model.parameters())


def test_reference_is_the_policy_at_step_0_under_bf16_autocast(
    tiny_model_dir, tiny_bench, tiny_sampling, tmp_path, fresh_accelerate_state
):
    """KL = 0 at step 0: the reference keeps the policy's dtypes (rotary inv_freq in fp32, fp32 trained weights) and
    its autocast placement; a bf16 copy differs by about 3e-3 in log-prob on this model."""
    policy = load_policy(
        ModelArguments(model_name_or_path=str(tiny_model_dir), freeze_vision_tower=True, dtype="bfloat16")
    )
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    trainer = make_trainer(policy, tiny_bench, tiny_sampling, tmp_path, accelerator)
    buffers = dict(trainer.ref_model.named_buffers())
    for name, buffer in policy.model.named_buffers():
        assert buffers[name].dtype == buffer.dtype, name
    assert buffers["model.language_model.rotary_emb.inv_freq"].dtype == torch.float32
    batch = fixed_batch(policy, trainer)
    with torch.no_grad():
        logps = policy.completion_logprobs(trainer.model, batch)
        with trainer._ref_context():
            ref = policy.completion_logprobs(trainer.ref_model, batch)
    mask = batch.completion_mask.float()
    kl = (torch.exp(ref - logps) - (ref - logps) - 1) * mask  # the k3 estimator of the loss
    assert kl.abs().max().item() == 0.0
    assert torch.equal(logps * mask, ref * mask)


def trained_weights(
    tiny_model_dir, tiny_bench, tiny_sampling, tmp_path, dtype: str
) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    policy = load_policy(
        ModelArguments(model_name_or_path=str(tiny_model_dir), freeze_vision_tower=False, dtype=dtype)
    )
    before = {n: p.detach().float().clone() for n, p in policy.model.named_parameters() if p.requires_grad}
    accelerator = Accelerator(cpu=True, mixed_precision="bf16" if dtype == "bfloat16" else "no")
    trainer = make_trainer(
        policy, tiny_bench, tiny_sampling, tmp_path / dtype, accelerator, learning_rate=5e-5
    )
    trainer.train()
    after = dict(policy.model.named_parameters())
    return {n: after[n].detach().float() - w for n, w in before.items()}


def test_bf16_training_keeps_fp32_master_weights_that_move_like_an_fp32_run(
    tiny_model_dir, tiny_bench, tiny_sampling, tmp_path, fresh_accelerate_state
):
    fp32 = trained_weights(tiny_model_dir, tiny_bench, tiny_sampling, tmp_path, "float32")
    AcceleratorState._reset_state(reset_partial_state=True)
    bf16 = trained_weights(tiny_model_dir, tiny_bench, tiny_sampling, tmp_path, "bfloat16")
    assert fp32.keys() == bf16.keys()

    def moved(deltas: dict[str, torch.Tensor], names) -> float:
        return sum(int((deltas[n] != 0).sum()) for n in names) / sum(deltas[n].numel() for n in names)

    everything = list(fp32)
    norms = [
        n for n in fp32 if "norm" in n
    ]  # weights around 1.0: a 5e-5 step is far below bf16's rounding step
    assert norms and moved(fp32, norms) > 0.9
    assert moved(bf16, norms) > 0.9 * moved(fp32, norms)
    assert moved(bf16, everything) > 0.9 * moved(fp32, everything)
    mean_step = {
        k: torch.cat([d.abs().flatten() for d in v.values()]).mean().item()
        for k, v in (("fp32", fp32), ("bf16", bf16))
    }
    assert 0.5 < mean_step["bf16"] / mean_step["fp32"] < 2.0, mean_step


def test_dropout_is_off_so_passes_over_the_same_weights_agree(
    tiny_model_dir, tiny_bench, tiny_sampling, tmp_path
):
    policy = load_policy(
        ModelArguments(
            model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.5
        )
    )
    with torch.no_grad():  # with lora_B = 0 the adapter (and its dropout) would not change the output
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    trainer = make_trainer(policy, tiny_bench, tiny_sampling, tmp_path)
    batch = fixed_batch(policy, trainer)
    trainer.model.train()
    with torch.no_grad():
        a = policy.completion_logprobs(trainer.model, batch)
        b = policy.completion_logprobs(trainer.model, batch)
    assert torch.equal(a, b)


def test_lora_warm_start_reference_is_the_starting_adapter(
    tiny_model_dir, tiny_bench, tiny_sampling, tmp_path
):
    lora = dict(use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0)
    sft = load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir), **lora))
    with torch.no_grad():  # an adapter that has been trained (a fresh one has lora_B = 0)
        for name, param in sft.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapter_dir = tmp_path / "sft-adapter"
    sft.model.save_pretrained(adapter_dir)
    sft.processor.save_pretrained(adapter_dir)

    policy = load_policy(ModelArguments(model_name_or_path=str(adapter_dir), **lora))
    trainer = make_trainer(policy, tiny_bench, tiny_sampling, tmp_path)
    batch = fixed_batch(policy, trainer)
    with torch.no_grad():
        current = policy.completion_logprobs(trainer.model, batch)
        with trainer._ref_context():
            reference = policy.completion_logprobs(trainer.model, batch)
        with policy.model.disable_adapter():
            base = policy.completion_logprobs(trainer.model, batch)
    mask = batch.completion_mask.bool()
    assert (current - reference)[mask].abs().max().item() < 1e-6  # step 0: the policy is its reference
    assert (current - base)[
        mask
    ].abs().max().item() > 1e-3  # the adapter matters, so the check above can fail
    # only the trained adapter is trainable and saved at the end
    assert all(".default." in n for n, p in policy.model.named_parameters() if p.requires_grad)
    trainer.train()
    assert list(policy.model.peft_config) == ["default"]


def test_sft_schedule_is_stepped_once_per_update(tiny_model_dir, tiny_bench, tmp_path):
    from invert4tvg.sft.trainer import SFTTrainer

    policy = load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir)))
    records = load_records("tvg-json", tiny_bench / "train.json", video_dir=tiny_bench / "videos").records
    args = SFTArguments(output_dir=str(tmp_path), report_to=[], lr_scheduler_type="linear", max_steps=4)
    trainer = SFTTrainer(policy, records, lambda r, t: None, args, Accelerator(cpu=True))
    # accelerate's wrapper steps the schedule num_processes times per call
    assert not isinstance(trainer.scheduler, AcceleratedScheduler)
    lrs = []
    for _ in range(4):
        trainer.optimizer.step()
        trainer.scheduler.step()
        lrs.append(trainer.scheduler.get_last_lr()[0])
    assert lrs == pytest.approx([args.learning_rate * (4 - k) / 4 for k in range(1, 5)])


def test_half_precision_trainable_weights_are_refused(tiny_model_dir, tiny_bench, tiny_sampling, tmp_path):
    policy = load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir)))
    policy.model.to(torch.bfloat16)
    with pytest.raises(ValueError, match="half precision"):
        make_trainer(policy, tiny_bench, tiny_sampling, tmp_path)
