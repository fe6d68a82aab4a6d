"""The grounding heads behind the policy seam (docs/heads.md): every head's SFT target decodes back to the ground
truth, its supervised loss falls, a saved model reloads with its head, and GRPO and evaluation read spans through
the head (the ``pred_span`` column), not by parsing text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import rewards
from invert4tvg.builders import load_templates
from invert4tvg.config import ModelArguments, TaskArguments
from invert4tvg.data.formats import load_records
from invert4tvg.data.video import decode_video
from invert4tvg.policy.frame_seg import single_token_id
from invert4tvg.policy.loading import load_policy
from invert4tvg.rollout.base import SamplingParams
from invert4tvg.rollout.hf import HFEngine
from invert4tvg.sft.trainer import supervised_example
from invert4tvg.tasks import build_task_instance
from invert4tvg.training.output_dir import write_final
from rewards import window_labels

REPO = Path(__file__).resolve().parents[1]
PROMPTS = str(REPO / "recipes/configs/prompts/tiny_heads.yaml")
# Heads read from the completion's text (loc and meco read hidden states: tests/test_hidden_heads.py).
TEXT_HEADS = ["frame_seg", "text_timestamps", "vtimellm"]


def resolution(head: str, duration: float) -> float:
    """How far a decoded boundary may lie from the ground truth: the head's time grid."""
    return {"text_timestamps": 0.005, "vtimellm": duration / 100, "frame_seg": duration / 25}[head] + 1e-9


@pytest.fixture(scope="module")
def records(tiny_bench):
    found = []
    for split in ("train", "val", "test"):
        found += load_records(
            "tvg-json", tiny_bench / f"{split}.json", video_dir=tiny_bench / "videos"
        ).records
    return found


def policy_for(model_dir, head: str, for_training: bool = False, **options):
    args = ModelArguments(
        model_name_or_path=str(model_dir), head=head, dtype="float32", freeze_vision_tower=False, **options
    )
    return load_policy(args, for_training=for_training)


@pytest.mark.parametrize("head", TEXT_HEADS)
def test_targets_decode_back_to_the_ground_truth(head, tiny_model_dir, records):
    policy = policy_for(tiny_model_dir, head)
    tokenizer = policy.processor.tokenizer
    iou = rewards.get("iou")
    for record in records:
        target = policy.tvg_target(record.query, record.start, record.end, record.duration)
        # what a perfect model emits: the target's tokens, decoded by the tokenizer as a rollout engine does
        text = tokenizer.decode(
            tokenizer(target, add_special_tokens=False)["input_ids"], skip_special_tokens=True
        )
        decoded = policy.decode(text, record.duration)
        assert decoded is not None, (head, target)
        tolerance = resolution(head, record.duration)
        assert abs(decoded.span[0] - record.start) <= tolerance, (head, record, target, decoded)
        assert abs(decoded.span[1] - record.end) <= tolerance, (head, record, target, decoded)
        score = iou([text], start=[record.start], end=[record.end], pred_span=[list(decoded.span)])[0]
        assert score > 0.5, (head, record, target, score)


def test_frame_seg_answers_one_token_per_window_and_the_iou_reward_reads_the_decoded_span(tiny_model_dir):
    policy = policy_for(tiny_model_dir, "frame_seg")
    tokenizer = policy.processor.tokenizer
    target = policy.tvg_target("q", 3.0, 7.0, 25.0)
    assert target == "000" + "1" * 4 + "0" * 18 and window_labels(3.0, 7.0, 25.0, 25) == [
        int(c) for c in target
    ]
    ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    assert ids == [policy.one if c == "1" else policy.zero for c in target]
    assert (
        window_labels(10.1, 10.2, 25.0, 25) == [0] * 10 + [1] + [0] * 14
    )  # shorter than a window: never empty
    with pytest.raises(ValueError, match="one token"):
        single_token_id(tokenizer, "ab")
    # The text is no "S to E": without the column the reward scores 0; with the head's span it scores the span.
    iou = rewards.get("iou")
    assert iou([target], start=[3.0], end=[7.0]) == [0.0]
    assert iou([target], start=[3.0], end=[7.0], pred_span=[[3.0, 7.0]]) == [1.0]
    assert iou([target], start=[3.0], end=[7.0], pred_span=[None]) == [0.0]
    # frame F1: the predicted windows against the ground truth's; a second run of '1' earns credit too
    f1 = rewards.get("frame_f1")
    mask = [int(c) for c in target]
    assert f1([target], start=[3.0], end=[7.0], duration=[25.0], pred_mask=[mask]) == [1.0]
    two_runs = [0] * 3 + [1] * 2 + [0] * 10 + [1] * 2 + [0] * 8  # 2 of 4 hit, 2 false alarms
    assert f1(["x"], start=[3.0], end=[7.0], duration=[25.0], pred_mask=[two_runs]) == [0.5]
    assert f1(["x"], start=[3.0], end=[7.0], duration=[25.0], pred_mask=[None]) == [0.0]
    assert policy.decode(target, 25.0).mask == mask


def supervised_batch(policy, records, sampling, n: int = 4):
    examples = []
    for record in records[:n]:
        instance = build_task_instance(
            record, "tvg", sampling, load_templates(TaskArguments(PROMPTS), policy)
        )
        examples.append(supervised_example(policy, record, instance, decode_video(instance.video)))
    return policy.supervised_batch(examples)


@pytest.mark.parametrize("head", TEXT_HEADS)
def test_supervised_loss_falls_on_a_small_batch(head, tiny_model_dir, records, tiny_sampling):
    torch.manual_seed(0)
    policy = policy_for(tiny_model_dir, head, for_training=True)
    inputs, labels = supervised_batch(policy, records, tiny_sampling)
    optimizer = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(25):
        # epoch 12: past the frame_seg ramp, so its BCE, Tversky and Dice terms carry most of the weight
        loss, parts = policy.supervised_loss(policy.model, inputs, labels, epoch=12.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.6 * losses[0], (head, losses)
    if head == "frame_seg":
        assert set(parts) == {"loss/lm", "loss/bce", "loss/tversky", "loss/dice"}


def test_frame_seg_loss_ramps_from_lm_only(tiny_model_dir, records, tiny_sampling):
    policy = policy_for(tiny_model_dir, "frame_seg", head_loss_ramp_epochs=2.0)
    inputs, labels = supervised_batch(policy, records, tiny_sampling, n=2)
    with torch.no_grad():
        start, parts = policy.supervised_loss(policy.model, inputs, labels, epoch=0.0)
        middle, _ = policy.supervised_loss(policy.model, inputs, labels, epoch=1.0)
    assert start.item() == pytest.approx(parts["loss/lm"], rel=1e-5)
    w = (0.6, 0.13335, 0.13335, 0.13335)  # halfway from (1, 0, 0, 0) to (0.2, 0.2667, 0.2667, 0.2667)
    expected = sum(a * parts[f"loss/{k}"] for a, k in zip(w, ("lm", "bce", "tversky", "dice")))
    assert middle.item() == pytest.approx(expected, rel=1e-4)


def requests_for(policy, records, sampling, task: str = "tvg", n: int = 2):
    templates = load_templates(TaskArguments(PROMPTS), policy)
    out = []
    for record in records[:n]:
        instance = build_task_instance(record, task, sampling, templates)
        out.append(
            policy.rollout_request(instance.messages, decode_video(instance.video), 3, record.id, task)
        )
    return out


def test_constrained_rollouts_are_masks_scored_under_the_same_constraint(
    tiny_model_dir, records, tiny_sampling
):
    policy = policy_for(tiny_model_dir, "frame_seg", head_frames=9)
    engine = HFEngine(policy.model, policy.processor)
    requests = requests_for(policy, records, tiny_sampling)
    completions = engine.generate(requests, SamplingParams(temperature=1.0, max_tokens=16, seed=0))
    eos = set(policy.constraint("tvg").end)
    for completion in (c for group in completions for c in group):
        assert len(completion.text) == 9 and set(completion.text) <= {"0", "1"}, completion.text
        assert completion.token_ids[-1] in eos and completion.finish_reason == "stop"
        decoded = policy.decode(completion, 20.0)
        if decoded is not None:
            assert len(decoded.saliency) == 9 and all(0.0 <= p <= 1.0 for p in decoded.saliency)
    batch = policy.sequence_batch(requests, completions)
    trainer = policy.completion_logprobs(policy.model, batch)
    sampled = torch.zeros_like(trainer)
    for row, completion in enumerate(c for group in completions for c in group):
        sampled[row, : len(completion.logprobs)] = torch.tensor(completion.logprobs)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(trainer[mask], sampled[mask], atol=1e-4, rtol=1e-4)
    # (position 9 holds the end token: a choice among the end ids only, e.g. <|im_end|> or <|endoftext|>)
    with pytest.raises(ValueError, match="at least 10"):
        engine.generate(requests, SamplingParams(temperature=1.0, max_tokens=8))
    # inversion prompts are answered in text: no constraint
    assert requests_for(policy, records, tiny_sampling, task="vd", n=1)[0].constraint is None


@pytest.mark.parametrize("head", TEXT_HEADS)
def test_a_saved_model_reloads_with_its_head_and_answers_the_same(
    head, tiny_model_dir, records, tiny_sampling, tmp_path
):
    options = {"head_frames": 7} if head == "frame_seg" else {}
    policy = policy_for(tiny_model_dir, head, **options)
    final = write_final(policy.model, policy.processor, tmp_path, 0, policy.head_config())
    loaded = load_policy(ModelArguments(model_name_or_path=str(final), dtype="float32"), for_training=False)
    assert type(loaded) is type(policy) and loaded.head_config() == policy.head_config()
    greedy = SamplingParams(temperature=0.0, max_tokens=12)
    before = HFEngine(policy.model, policy.processor).generate(
        requests_for(policy, records, tiny_sampling), greedy
    )
    after = HFEngine(loaded.model, loaded.processor).generate(
        requests_for(loaded, records, tiny_sampling), greedy
    )
    assert [[c.token_ids for c in g] for g in before] == [[c.token_ids for c in g] for g in after]
    if head == "frame_seg":
        assert all(len(c.text) == 7 for g in after for c in g)


SEEN: list[dict] = []


def pred_span_spy(completions, **columns):
    """A plugin reward: records what the rewards receive."""
    SEEN.append(
        {
            "completions": list(completions),
            **{k: list(columns[k]) for k in ("task", "pred_span", "pred_mask")},
        }
    )
    return [0.0] * len(completions)


if "pred_span_spy" not in rewards.available():
    rewards.register("pred_span_spy", pred_span_spy)


@pytest.mark.parametrize("head", TEXT_HEADS)
def test_two_grpo_steps_score_the_decoded_span(head, tiny_bench, tiny_model_dir, tmp_path):
    from run_fixtures import grpo_args, small_train

    from invert4tvg.workflows.recipe_loader import load_recipe

    SEEN.clear()
    out = tmp_path / "run"
    args = grpo_args(tiny_bench, small_train(tiny_bench, tmp_path / "train.json"), tiny_model_dir, out)
    args += ["--head", head, "--prompt_templates", PROMPTS, "--max_steps", "2", "--save_steps", "0"]
    args += ["--max_completion_length", "26", "--tvg_probability", "1.0"]
    args += ["--reward_funcs", "invert4tvg", "pred_span_spy"]
    load_recipe("grpo_qwen25vl").main(args)
    assert len(SEEN) == 2
    policy = policy_for(tiny_model_dir, head)
    for call in SEEN:
        assert set(call["task"]) == {"tvg"}
        assert len(call["pred_span"]) == len(call["completions"]) == 4
        for text, span in zip(call["completions"], call["pred_span"]):
            decoded = policy.decode(text, 1.0)  # spans scale with the duration: compare where both parse
            assert (span is None) == (decoded is None), (text, span)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all("iou" in r and "parse_fail" in r for r in rows)
    parse_fail = sum(s is None for call in SEEN for s in call["pred_span"]) / 8
    assert sum(r["parse_fail"] for r in rows) / 2 == pytest.approx(parse_fail)
    assert json.loads((out / "final/invert4tvg_head.json").read_text())["head"] == head
    if head == "frame_seg":
        assert all(len(t) == 25 and set(t) <= {"0", "1"} for call in SEEN for t in call["completions"])
        for call in SEEN:  # the per-window decisions reach the rewards too (frame_f1 reads them)
            for text, mask in zip(call["completions"], call["pred_mask"]):
                assert mask is None or mask == [int(c) for c in text]


@pytest.mark.parametrize("head", ["vtimellm", "frame_seg"])
def test_sft_warm_start_then_eval_needs_no_head_flag(head, tiny_bench, tiny_model_dir, tmp_path):
    from run_fixtures import small_train

    from invert4tvg.cli import main as cli
    from invert4tvg.workflows.recipe_loader import load_recipe

    out = tmp_path / "sft"
    load_recipe("sft_warmstart").main(
        [
            "--config", str(REPO / "recipes/configs/sft_heads_tiny_cpu.yaml"),
            "--head", head,
            "--model_name_or_path", str(tiny_model_dir),
            "--train_annotations", str(small_train(tiny_bench, tmp_path / "train.json", 8)),
            "--video_dir", str(tiny_bench / "videos"),
            "--frame_cache_dir", str(tmp_path / "frame-cache"),
            "--output_dir", str(out),
            "--per_device_train_batch_size", "4",
            "--max_steps", "3",
            "--report_to", "none",
        ]
    )  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(math.isfinite(r["loss"]) for r in rows)
    assert cli(
        [
            "eval", "--model", str(out / "final"), "--data", str(tiny_bench), "--split", "test",
            "--out", str(tmp_path / "eval"), "--tasks", "", "--max-samples", "4", "--max-new-tokens", "30",
            "--config", str(REPO / "recipes/configs/sft_heads_tiny_cpu.yaml"),
        ]
    ) == 0  # fmt: skip
    predictions = [
        json.loads(line) for line in (tmp_path / "eval/predictions.jsonl").read_text().splitlines()
    ]
    assert predictions and len(predictions) <= 4
    if head == "frame_seg":  # decoded by the recorded head: constrained masks, saliency with every span
        assert all(len(p["output"]) == 25 and set(p["output"]) <= {"0", "1"} for p in predictions)
        assert all(len(p["saliency"]) == 25 for p in predictions if p["pred"] is not None)
