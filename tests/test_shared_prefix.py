"""Log-prob passes: chunked log-probs equal the full-logits computation, and the shared-prefix layout (each prompt and
video once per group) gives the repeated layout's log-probs, gradients and GRPO losses."""

from __future__ import annotations

import pytest
import torch
from test_grpo_models import make_trainer

from invert4tvg.config import ModelArguments
from invert4tvg.data.formats import load_records
from invert4tvg.data.video import decode_video
from invert4tvg.grpo.loss import LOSS_TYPES
from invert4tvg.modeling.logprobs import token_logprobs
from invert4tvg.modeling.shared_prefix import micro_batches, pack_groups
from invert4tvg.policy.loading import load_policy
from invert4tvg.rollout.base import Completion
from invert4tvg.tasks import TaskSampler


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir), freeze_vision_tower=False))


@pytest.fixture(scope="module")
def requests(policy, tiny_bench, tiny_sampling):
    """Three grounding prompts of different lengths (queries and videos differ), so prompts are left-padded."""
    records = load_records("tvg-json", tiny_bench / "train.json", video_dir=tiny_bench / "videos").records[:3]
    sampler = TaskSampler(p=1.0, seed=0)
    instances = sampler.make_instances(records, ["tvg"] * 3, sampling=tiny_sampling)
    return [policy.rollout_request(i.messages, decode_video(i.video), 1) for i in instances]


def random_completions(policy, num_groups: int, group: int, seed: int = 0) -> list[list[Completion]]:
    """Completions of different lengths (one of 1 token) made of ordinary text tokens."""
    gen = torch.Generator().manual_seed(seed)
    allowed = torch.tensor(
        [i for i in range(3, len(policy.processor.tokenizer)) if i not in set(policy.suppress_ids.tolist())],
        dtype=torch.long,
    )
    groups = []
    for g in range(num_groups):
        rows = []
        for k in range(group):
            n = 1 if (g + k) % 5 == 4 else int(torch.randint(2, 9, (1,), generator=gen))
            ids = allowed[torch.randint(len(allowed), (n,), generator=gen)].tolist()
            rows.append(Completion(ids, "", [0.0] * n, "stop", 0))
        groups.append(rows)
    return groups


def full_logits_logprobs(policy, model, batch, temperature=1.0):
    """The computation the chunked path replaces: full-vocabulary fp32 logits for the whole batch."""
    width = batch.completion_ids.shape[1]
    logits = model(**batch.inputs, logits_to_keep=width + 1, use_cache=False).logits[:, :-1].float()
    logits = logits / temperature
    logits[..., policy.suppress_ids] = float("-inf")
    chosen = logits.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)


def grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def assert_grads_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float = 1e-4) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        scale = a[name].abs().max().clamp(min=1e-12)
        assert (a[name] - b[name]).abs().max() / scale < rtol, name


def test_chunked_logprobs_equal_full_logits_values_and_gradients(policy, requests):
    batch = policy.sequence_batch(requests, random_completions(policy, 3, 2))
    mask = batch.completion_mask.bool()
    weights = torch.randn(batch.completion_ids.shape, generator=torch.Generator().manual_seed(1))
    model = policy.model

    expected = full_logits_logprobs(policy, model, batch, temperature=0.7)
    (expected * weights)[mask].sum().backward()
    expected_grads = grads(model)
    got = policy.completion_logprobs(model, batch, temperature=0.7)
    (got * weights)[mask].sum().backward()
    assert torch.allclose(got[mask], expected[mask], atol=1e-5, rtol=0)
    assert_grads_close(grads(model), expected_grads)


def test_token_logprobs_chunk_size_does_not_change_the_result():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(3, 7, 16, requires_grad=True)
    targets = torch.randint(50, (3, 7))
    whole = token_logprobs(head, hidden, targets, chunk_size=10_000)
    (g_whole,) = torch.autograd.grad(whole.sum(), hidden)
    for chunk in (1, 4, 21):
        part = token_logprobs(head, hidden, targets, chunk_size=chunk)
        (g_part,) = torch.autograd.grad(part.sum(), hidden)
        assert torch.allclose(part, whole, atol=1e-6) and torch.allclose(g_part, g_whole, atol=1e-6)
    reference = torch.log_softmax(head(hidden), -1).gather(-1, targets[..., None])[..., 0]
    assert torch.allclose(whole, reference, atol=1e-6)


@pytest.mark.parametrize("group", [1, 2, 8])
def test_shared_prefix_logprobs_and_gradients_equal_the_repeated_layout(policy, requests, group):
    repeated = policy.sequence_batch(requests, random_completions(policy, 3, group, seed=group))
    assert (repeated.inputs["attention_mask"][:, 0] == 0).any(), "prompts should be left-padded"
    shared = pack_groups(repeated, group, policy.model)
    assert shared.prompt_inputs["input_ids"].shape[0] == 3  # each prompt and its video once
    mask = repeated.completion_mask.bool()
    weights = torch.randn(repeated.completion_ids.shape, generator=torch.Generator().manual_seed(2))
    model = policy.model

    expected = policy.completion_logprobs(model, repeated)
    (expected * weights)[mask].sum().backward()
    expected_grads = grads(model)
    got = policy.completion_logprobs(model, shared)
    (got * weights)[mask].sum().backward()
    assert torch.isfinite(got).all()
    assert torch.allclose(got[mask], expected[mask], atol=1e-5, rtol=0)
    assert_grads_close(grads(model), expected_grads)

    # Micro-batches of whole groups give the same values as the full batch.
    rows = micro_batches(len(repeated), 2 * group, group)[-1]
    part = policy.completion_logprobs(model, shared.select(rows))
    assert torch.allclose(part[mask[rows]], expected[rows][mask[rows]], atol=1e-5, rtol=0)


def test_shared_prefix_selects_whole_groups_only(policy, requests):
    shared = pack_groups(policy.sequence_batch(requests, random_completions(policy, 3, 2)), 2, policy.model)
    with pytest.raises(ValueError, match="whole groups"):
        shared.select([1, 2])
    assert micro_batches(10, 3, 2) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert micro_batches(10, 5, 1) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_shared_prefix_without_video_equals_the_repeated_layout(policy):
    requests = [
        policy.rollout_request([{"role": "user", "content": text}], None, 1)
        for text in ("when does the person open the door?", "a cup")
    ]
    repeated = policy.sequence_batch(requests, random_completions(policy, 2, 3))
    shared = pack_groups(repeated, 3, policy.model)
    mask = repeated.completion_mask.bool()
    with torch.no_grad():
        expected = policy.completion_logprobs(policy.model, repeated)
        got = policy.completion_logprobs(policy.model, shared)
    assert torch.allclose(got[mask], expected[mask], atol=1e-5, rtol=0)


def grpo_step(tiny_model_dir, tiny_bench, tiny_sampling, tmp_path, **overrides):
    """One GRPO step from the same weights, data and sampling seed; its metrics and the gradients of its updates."""
    policy = load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir), freeze_vision_tower=False))
    # 2 prompts x 4 completions in micro-batches of 4 (one group each)
    options = dict(num_generations=4, num_iterations=2, per_device_train_batch_size=4, max_steps=1)
    options["gradient_accumulation_steps"] = 2
    run = tmp_path / f"shared-{overrides['shared_prefix']}"
    trainer = make_trainer(policy, tiny_bench, tiny_sampling, run, **options, **overrides)
    seen: list[dict[str, torch.Tensor]] = []  # the gradients of each update, read just before it is applied
    step = trainer.optimizer.step

    def recording_step(*a, **k):
        seen.append({n: p.grad.clone() for n, p in policy.model.named_parameters() if p.grad is not None})
        return step(*a, **k)

    trainer.optimizer.step = recording_step
    torch.manual_seed(0)
    metrics = trainer.train_step()
    return metrics, seen


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_a_grpo_step_is_the_same_with_and_without_shared_prefix(
    tiny_model_dir, tiny_bench, tiny_sampling, tmp_path, loss_type
):
    args = (tiny_model_dir, tiny_bench, tiny_sampling, tmp_path)
    repeated, repeated_grads = grpo_step(*args, loss_type=loss_type, shared_prefix=False)
    shared, shared_grads = grpo_step(*args, loss_type=loss_type, shared_prefix=True)
    assert repeated["loss"] != 0.0
    for key in ("loss", "kl", "clip_ratio/region_mean", "reward"):
        assert shared[key] == pytest.approx(repeated[key], rel=1e-4, abs=1e-7), key
    # Both updates (num_iterations = 2: the second runs after the first moved the weights) see the same gradients.
    assert len(shared_grads) == len(repeated_grads) == 2
    for got, expected in zip(shared_grads, repeated_grads):
        assert_grads_close(got, expected)


def test_shared_prefix_refuses_attention_that_takes_no_mask():
    from types import SimpleNamespace

    from invert4tvg.modeling.shared_prefix import check_attention

    with pytest.raises(ValueError, match="shared_prefix: false"):
        check_attention(SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2")))
    assert check_attention(SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa"))) == "sdpa"


def test_rollouts_from_one_prefill_per_prompt_match_the_repeated_path(policy, requests, monkeypatch):
    from invert4tvg.rollout import hf
    from invert4tvg.rollout.base import SamplingParams
    from invert4tvg.rollout.hf import HFEngine

    prefills, original = [], hf.prefill_once

    def spy(model, inputs, counts):
        prefills.append(original(model, inputs, counts))
        return prefills[-1]

    monkeypatch.setattr(hf, "prefill_once", spy)
    batch = [type(r)(r.prompt, r.video, 3, r.request_id) for r in requests]
    sampling = SamplingParams(temperature=1.0, max_tokens=8, seed=0)
    shared = HFEngine(policy.model, policy.processor).generate(batch, sampling)
    assert (
        len(prefills) == 1 and prefills[0]["past_key_values"].get_seq_length() > 0
    )  # one prefill, 3 prompts
    repeated = HFEngine(policy.model, policy.processor, prefill_once=False).generate(batch, sampling)
    for group_a, group_b in zip(shared, repeated):
        for a, b in zip(group_a, group_b):
            assert a.token_ids == b.token_ids
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
    # ... and the trainer scores the sampled tokens as the engine did.
    sequences = policy.sequence_batch(batch, shared)
    with torch.no_grad():
        scored = policy.completion_logprobs(policy.model, sequences)
    engine = torch.zeros_like(scored)
    for row, completion in enumerate(c for group in shared for c in group):
        engine[row, : len(completion.logprobs)] = torch.tensor(completion.logprobs)
    mask = sequences.completion_mask.bool()
    assert torch.allclose(scored[mask], engine[mask], atol=1e-5)
