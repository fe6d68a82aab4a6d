"""Our GRPO loss equals TRL's GRPOTrainer loss on the same text-only batch (same model, completions, rewards).

TRL's trainer generates through its documented ``rollout_func`` hook, which here returns fixed completions, so
both sides see identical tokens; the reward function returns fixed per-completion values. Compared: the loss and
the gradients, for every ``loss_type`` both implement, with group / batch / no reward scaling, token- and
sequence-level importance sampling, and a KL term against a reference that differs from the policy.
"""

from __future__ import annotations

import os

import pytest
import torch
from datasets import Dataset
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
from trl import GRPOConfig, GRPOTrainer

from invert4tvg.grpo.loss import LossConfig, compute_advantages, grpo_loss
from invert4tvg.policy.text_timestamps import TextTimestampPolicy
from invert4tvg.rollout.base import Completion, RolloutRequest

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is TRL's documented (experimental) hook
G = 4
PROMPTS = ["the red circle grows.", "a blue square is moving to the left"]
# Completion token strings per prompt (G each); the last one of each group never reaches EOS (truncated).
TEXTS = [
    ["<answer>1.00 to 3.00</answer>", "<answer>2 to 5</answer>", "<think>x</think>", "4 to 9 to 9 to 9"],
    ["<answer>0.50 to 1.50</answer>", "grows", "<answer>7 to 8</answer>", "left left left left"],
]
REWARDS = [[1.0, 0.25, 0.0, 0.5], [0.0, 1.5, 0.75, 0.75]]
MAX_LEN = 12


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    tokenizer = processor.tokenizer
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    completion_ids = []
    for group in TEXTS:
        ids = []
        for j, text in enumerate(group):
            tokens = tokenizer(text, add_special_tokens=False)["input_ids"][: MAX_LEN - 1]
            ids.append(tokens if j == G - 1 else [*tokens, eos])
        completion_ids.append(ids)
    return processor, prompt_ids, completion_ids


def trl_loss_and_grads(model, processor, prompt_ids, completion_ids, tmp_path, **config):
    by_text = {}
    for p, group, rewards in zip(PROMPTS, completion_ids, REWARDS):
        for ids, r in zip(group, rewards):
            by_text[(p, processor.tokenizer.decode(ids, skip_special_tokens=True))] = r

    def rollout_func(prompts, trainer):
        index = [PROMPTS.index(p) for p in prompts]
        seen: dict[int, int] = {}
        out_prompt, out_completion = [], []
        for i in index:
            j = seen.get(i, 0)
            seen[i] = j + 1
            out_prompt.append(prompt_ids[i])
            out_completion.append(completion_ids[i][j])
        return {
            "prompt_ids": out_prompt,
            "completion_ids": out_completion,
            "logprobs": [[0.0] * len(c) for c in out_completion],
        }

    def reward(prompts, completions, **kwargs):
        return [by_text[(p, c)] for p, c in zip(prompts, completions)]

    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=len(PROMPTS) * G,
        num_generations=G,
        num_generations_eval=G,
        max_completion_length=MAX_LEN,
        report_to=[],
        use_cpu=True,
        bf16=False,
        logging_steps=1,
        temperature=1.0,
        **config,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_list([{"prompt": p} for p in PROMPTS]),
        processing_class=processor.tokenizer,
        rollout_func=rollout_func,
    )
    if trainer.ref_model is not None:
        # A reference that differs from the policy, so the KL term and its gradient are not zero.
        torch.manual_seed(1)
        with torch.no_grad():
            for p in trainer.ref_model.parameters():
                p.add_(0.02 * torch.randn_like(p))
    trainer.model.eval()  # no dropout either way; eval mode skips TRL's gradient-accumulation bookkeeping
    rows = [{"prompt": p} for p in PROMPTS for _ in range(G)]
    inputs = trainer._generate_and_score_completions(rows)
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return loss.detach(), grads, inputs["advantages"], trainer.ref_model


def our_loss_and_grads(model, ref_model, processor, prompt_ids, completion_ids, cfg: LossConfig, scale: str):
    policy = TextTimestampPolicy(model, processor)
    policy.suppress_ids = policy.suppress_ids[
        :0
    ]  # TRL does not exclude vision tokens; compare the loss math alone
    tokenizer = processor.tokenizer
    requests = [RolloutRequest(tokenizer.decode(ids), None, G) for ids in prompt_ids]
    completions = [[Completion(list(ids), "", [], "stop", 0) for ids in group] for group in completion_ids]
    batch = policy.sequence_batch(requests, completions)
    # sequence_batch re-tokenises the prompt text; it must give back the very same ids TRL used.
    for row, ids in enumerate(prompt_ids):
        got = batch.inputs["input_ids"][row * G][batch.inputs["attention_mask"][row * G].bool()].tolist()
        assert got[: len(ids)] == ids
    rewards = torch.tensor([r for group in REWARDS for r in group])
    advantages = compute_advantages(rewards, G, scale).values
    logps = policy.completion_logprobs(model, batch)
    ref = None
    if cfg.beta:
        with torch.no_grad():
            ref = policy.completion_logprobs(ref_model, batch)
    mask = batch.completion_mask.float()
    loss = grpo_loss(logps, logps.detach(), advantages, mask, cfg, ref)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return loss.detach(), grads, advantages


@pytest.mark.parametrize(
    ("loss_type", "scale", "level", "beta", "kl_correction"),
    [
        ("grpo", "group", "token", 0.0, True),
        ("grpo", "group", "token", 0.04, False),
        ("grpo", "group", "token", 0.04, True),
        ("bnpo", "group", "token", 0.0, True),
        ("dr_grpo", "none", "token", 0.0, True),
        ("dapo", "batch", "token", 0.0, True),
        ("dapo", "group", "sequence", 0.04, True),
    ],
)
def test_loss_matches_trl(setup, tiny_model_dir, tmp_path, loss_type, scale, level, beta, kl_correction):
    processor, prompt_ids, completion_ids = setup
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir)
    config = dict(
        loss_type=loss_type,
        scale_rewards=scale,
        importance_sampling_level=level,
        beta=beta,
        epsilon=0.2,
        epsilon_high=0.28,
        use_bias_correction_kl=kl_correction,
    )
    trl_loss, trl_grads, trl_adv, ref_model = trl_loss_and_grads(
        model, processor, prompt_ids, completion_ids, tmp_path, **config
    )
    cfg = LossConfig(
        loss_type=loss_type,
        beta=beta,
        epsilon=0.2,
        epsilon_high=0.28,
        importance_sampling_level=level,
        max_completion_length=MAX_LEN,
        use_bias_correction_kl=kl_correction,
    )
    ours, our_grads, our_adv = our_loss_and_grads(
        model, ref_model, processor, prompt_ids, completion_ids, cfg, scale
    )
    torch.testing.assert_close(our_adv, trl_adv.cpu(), rtol=1e-5, atol=1e-6)
    # At ratio 1 the surrogate's value is -mean(advantage) (about 0); its gradient is what training uses.
    assert sum(g.abs().sum() for g in trl_grads.values()) > 1e-3
    torch.testing.assert_close(ours, trl_loss, rtol=1e-4, atol=1e-6)
    assert trl_grads.keys() == our_grads.keys()
    for name in trl_grads:
        torch.testing.assert_close(
            our_grads[name], trl_grads[name], rtol=1e-3, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}"
        )
