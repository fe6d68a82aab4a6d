"""The heads that read hidden states (docs/heads.md): VideoExpert's ``<LOC>`` head and MeCo's structural tokens.

Their labels decode back to the ground truth, their losses fall, their modules survive save -> load (final/ and
checkpoints) and a GRPO run, which freezes them while the reward reads the span they decode."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_heads import PROMPTS, REPO, SEEN, policy_for, requests_for

from invert4tvg.config import ModelArguments
from invert4tvg.data.video import decode_video
from invert4tvg.policy import head_modules
from invert4tvg.policy.hidden import frame_labels
from invert4tvg.policy.loading import load_policy
from invert4tvg.policy.loc import decode_frames, target_offsets
from invert4tvg.policy.meco import EVENT, TRANSITION, decode_assignment, structure, token_frames
from invert4tvg.rollout.base import SamplingParams
from invert4tvg.rollout.hf import HFEngine
from invert4tvg.tasks import build_task_instance
from invert4tvg.training.output_dir import write_final

HIDDEN_HEADS = ["loc", "meco"]


@pytest.fixture(scope="module")
def records(tiny_bench):
    from invert4tvg.data.formats import load_records

    return [
        r
        for split in ("train", "val", "test")
        for r in load_records(
            "tvg-json", tiny_bench / f"{split}.json", video_dir=tiny_bench / "videos"
        ).records
    ]


def frames_seen(record, sampling) -> int:
    """How many frame features the model reads for a record's video: one per temporal patch (2 frames)."""
    from invert4tvg.builders import load_templates
    from invert4tvg.config import TaskArguments

    instance = build_task_instance(record, "tvg", sampling, load_templates(TaskArguments(PROMPTS)))
    return len(decode_video(instance.video).frames) // 2


def test_loc_labels_decode_back_to_the_ground_truth(records, tiny_sampling):
    for record in records:
        n = frames_seen(record, tiny_sampling)
        foreground = frame_labels(n, record.start, record.end, record.duration)
        logits = torch.where(foreground, 5.0, -5.0)
        # what a perfect head predicts: foreground on the span's frames, each with its offsets to the boundaries
        decoded = decode_frames(
            logits, target_offsets(n, record.start, record.end, record.duration), record.duration
        )
        assert decoded.span == pytest.approx((record.start, record.end), abs=1e-4), record
        assert decoded.mask == foreground.int().tolist()


def test_meco_labels_decode_back_to_the_ground_truth(records, tiny_sampling, tiny_model_dir):
    policy = policy_for(
        tiny_model_dir, "meco", for_training=True
    )  # (untrained: loading it for eval is refused)
    tokenizer = policy.processor.tokenizer
    ids = {tokenizer.convert_tokens_to_ids(t): t for t in (EVENT, TRANSITION)}
    for record in records:
        target = policy.tvg_target(record.query, record.start, record.end, record.duration)
        written = [ids[i] for i in tokenizer(target, add_special_tokens=False)["input_ids"] if i in ids]
        assert written == structure(record.start, record.end, record.duration), target
        assert record.query.strip() in target.split(EVENT)[0]  # the caption precedes its event token
        n = frames_seen(record, tiny_sampling)
        event = frame_labels(n, record.start, record.end, record.duration)
        token_ids = [policy.event_id if t == EVENT else policy.token_ids[1] for t in written]
        segments = token_frames(token_ids, policy.event_id, event)
        # the segments partition the video's frames (a transition shorter than a frame has none)
        assert torch.stack(segments).sum(0).tolist() == [1] * n
        log_p = torch.stack([torch.where(seg, 0.0, -20.0) for seg in segments]).log_softmax(-1)
        decoded = decode_assignment(log_p, token_ids, policy.event_id, record.duration)
        width = record.duration / n  # the frame grid: boundaries within half a window of the truth
        assert abs(decoded.span[0] - record.start) <= width / 2 + 1e-6, (record, decoded.span)
        assert abs(decoded.span[1] - record.end) <= width / 2 + 1e-6, (record, decoded.span)
    # no transition where the event touches an edge
    assert structure(0.0, 4.0, 10.0) == [EVENT, TRANSITION]
    assert structure(2.0, 10.0, 10.0) == [TRANSITION, EVENT]
    assert structure(0.0, 10.0, 10.0) == [EVENT]


@pytest.mark.parametrize("head", HIDDEN_HEADS)
def test_head_losses_fall_on_a_small_batch(head, tiny_model_dir, records, tiny_sampling):
    torch.manual_seed(0)
    policy = policy_for(tiny_model_dir, head, for_training=True)
    assert policy.module is not None and all(p.requires_grad for p in policy.module.parameters())
    inputs, labels, examples = batch_with_examples(policy, records, tiny_sampling)
    optimizer = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=2e-3)
    history = []
    for _ in range(60):
        loss, parts = policy.supervised_loss(policy.model, inputs, labels, examples=examples)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append({"loss": loss.item(), **parts})
    assert all(math.isfinite(h["loss"]) for h in history)
    first, last = history[0], history[-1]
    assert last["loss"] < 0.5 * first["loss"], history[::10]
    head_part = {"loc": "loss/giou", "meco": "loss/st"}[head]
    assert last[head_part] < 0.9 * first[head_part], [h[head_part] for h in history[::10]]
    expected = {"loc": {"loss/lm", "loss/bce", "loss/l1", "loss/giou"}, "meco": {"loss/lm", "loss/st"}}[head]
    assert set(parts) == expected


def batch_with_examples(policy, records, sampling, n: int = 4):
    from invert4tvg.builders import load_templates
    from invert4tvg.config import TaskArguments
    from invert4tvg.sft.trainer import supervised_example

    templates = load_templates(TaskArguments(PROMPTS), policy)
    examples = []
    for record in records[:n]:
        instance = build_task_instance(record, "tvg", sampling, templates)
        examples.append(supervised_example(policy, record, instance, decode_video(instance.video)))
    return (*policy.supervised_batch(examples), examples)


def train_briefly(policy, records, sampling, steps: int = 10) -> None:
    inputs, labels, examples = batch_with_examples(policy, records, sampling)
    optimizer = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=2e-3)
    for _ in range(steps):
        policy.supervised_loss(policy.model, inputs, labels, examples=examples)[0].backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("head", HIDDEN_HEADS)
def test_save_then_load_gives_identical_spans(head, tiny_model_dir, records, tiny_sampling, tmp_path):
    from invert4tvg.policy.model_dir import load_weights

    torch.manual_seed(0)
    policy = policy_for(tiny_model_dir, head, for_training=True, head_width=32)
    train_briefly(policy, records, tiny_sampling)
    final = write_final(policy.model, policy.processor, tmp_path, 10, policy.head_config())
    assert (final / head_modules.FILE).is_file()
    # the model's own files hold no head weights: a plain Qwen2.5-VL loads them without unknown keys
    from safetensors import safe_open

    with safe_open(str(final / "model.safetensors"), "pt") as saved:
        assert not [k for k in saved.keys() if head_modules.ATTRIBUTE in k]  # noqa: SIM118

    requests = requests_for(policy, records, tiny_sampling)
    completions = HFEngine(policy.model, policy.processor).generate(
        requests, SamplingParams(temperature=1.0, max_tokens=16, seed=0)
    )
    durations = [r.duration for r in records[:2]]
    before = policy.decode_completions(requests, completions, durations)
    loaded = load_policy(ModelArguments(model_name_or_path=str(final), dtype="float32"), for_training=False)
    assert loaded.head_config() == policy.head_config() and loaded.head_config()["width"] == 32
    after = loaded.decode_completions(requests, completions, durations)
    assert [[d and d.span for d in g] for g in after] == [[d and d.span for d in g] for g in before]
    assert any(d is not None for g in after for d in g)

    # a checkpoint's weights (resume) restore the module in place
    fresh = policy_for(tiny_model_dir, head, for_training=True, head_width=32)
    load_weights(fresh.model, final)
    for (name, a), b in zip(policy.module.state_dict().items(), fresh.module.state_dict().values()):
        assert torch.equal(a, b), name

    # evaluating a model whose head was never trained is refused, with the file named
    with pytest.raises(FileNotFoundError, match=head_modules.FILE):
        policy_for(tiny_model_dir, head)
    with pytest.raises(ValueError, match="does not fit"):
        load_policy(ModelArguments(model_name_or_path=str(final), dtype="float32", head_width=16), False)


@pytest.mark.parametrize("head", HIDDEN_HEADS)
def test_sft_eval_and_two_grpo_steps_read_the_heads_span(head, tiny_bench, tiny_model_dir, tmp_path):
    """SFT (the head learns), eval without a head flag, then GRPO: the reward receives the head's spans; with
    ``head_aux_loss_weight 0`` the module leaves GRPO as it came in (frozen), by default it trains."""
    from run_fixtures import grpo_args, small_train
    from safetensors.torch import load_file

    from invert4tvg.cli import main as cli
    from invert4tvg.workflows.recipe_loader import load_recipe

    train = small_train(tiny_bench, tmp_path / "train.json", 8)
    sft = tmp_path / "sft"
    load_recipe("sft_warmstart").main(
        [
            "--config", str(REPO / "recipes/configs/sft_heads_tiny_cpu.yaml"),
            "--head", head, "--head_width", "32",
            "--model_name_or_path", str(tiny_model_dir),
            "--train_annotations", str(train),
            "--video_dir", str(tiny_bench / "videos"),
            "--frame_cache_dir", str(tmp_path / "frame-cache"),
            "--output_dir", str(sft),
            "--per_device_train_batch_size", "4",
            "--invert_sft_fraction", "0",
            "--learning_rate", "3e-3",
            "--max_steps", "40",
            "--report_to", "none",
        ]
    )  # fmt: skip
    rows = [json.loads(line) for line in (sft / "metrics.jsonl").read_text().splitlines()]
    part = {"loc": "loss/giou", "meco": "loss/st"}[head]
    assert all(part in r for r in rows), rows[0]
    assert cli(
        [
            "eval", "--model", str(sft / "final"), "--data", str(tiny_bench), "--split", "train",
            "--out", str(tmp_path / "eval"), "--tasks", "", "--max-samples", "4", "--max-new-tokens", "24",
            "--config", str(REPO / "recipes/configs/sft_heads_tiny_cpu.yaml"),
        ]
    ) == 0  # fmt: skip
    predictions = [
        json.loads(line) for line in (tmp_path / "eval/predictions.jsonl").read_text().splitlines()
    ]
    assert sum(p["pred"] is not None for p in predictions) >= 2, predictions
    assert all(len(p["saliency"]) > 1 for p in predictions if p["pred"] is not None)

    SEEN.clear()
    out = tmp_path / "grpo"
    args = grpo_args(tiny_bench, train, sft / "final", out)
    args += ["--prompt_templates", PROMPTS, "--max_steps", "2", "--save_steps", "0"]
    args += ["--max_completion_length", "24", "--tvg_probability", "1.0", "--head_aux_loss_weight", "0"]
    args += ["--reward_funcs", "invert4tvg", "pred_span_spy"]
    load_recipe("grpo_qwen25vl").main(args)
    assert len(SEEN) == 2
    spans = [s for call in SEEN for s in call["pred_span"]]
    assert len(spans) == 8 and any(s is not None for s in spans), SEEN
    assert all(0.0 <= s[0] <= s[1] for s in spans if s is not None)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all("iou" in r for r in rows)
    assert json.loads((out / "final/invert4tvg_head.json").read_text())["head"] == head
    before, after = load_file(sft / "final" / head_modules.FILE), load_file(out / "final" / head_modules.FILE)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)

    # by default the head's supervised loss stays on as an auxiliary term: the module trains with the policy
    aux = tmp_path / "grpo_aux"
    args = grpo_args(tiny_bench, train, sft / "final", aux)
    args += ["--prompt_templates", PROMPTS, "--max_steps", "2", "--save_steps", "0"]
    args += ["--max_completion_length", "24", "--tvg_probability", "1.0"]
    load_recipe("grpo_qwen25vl").main(args)
    rows = [json.loads(line) for line in (aux / "metrics.jsonl").read_text().splitlines()]
    assert all(r["head_loss"] > 0 for r in rows), rows
    after = load_file(aux / "final" / head_modules.FILE)
    assert not all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("head", HIDDEN_HEADS)
def test_the_auxiliary_head_loss_is_the_same_in_both_layouts(head, tiny_model_dir, records, tiny_sampling):
    """GRPO's passes use one shared-prefix row per group; the head's loss read from them equals the loss read
    from the repeated rows, so ``head_aux_loss_weight`` means the same in either layout."""
    from invert4tvg.modeling.readout import capture_layers
    from invert4tvg.modeling.shared_prefix import pack_groups

    torch.manual_seed(0)
    policy = policy_for(tiny_model_dir, head, for_training=True, head_width=32)
    train_briefly(policy, records, tiny_sampling, steps=20)
    requests = requests_for(policy, records, tiny_sampling)
    completions = HFEngine(policy.model, policy.processor).generate(
        requests, SamplingParams(temperature=1.0, max_tokens=20, seed=1)
    )
    batch = policy.sequence_batch(requests, completions)
    spans = [(r.start, r.end, r.duration) for r in records[:2] for _ in range(3)]
    spans[1] = None  # a completion without ground truth (an inversion task) adds nothing
    losses = []
    for layout in (batch, pack_groups(batch, 3, policy.model)):
        with capture_layers(policy.model, policy.hidden_layers) as store:
            policy.completion_logprobs(policy.model, layout)
        losses.append(policy.rl_head_loss(store, layout, spans))
    assert losses[0].item() > 0
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    losses[0].backward()  # gradients reach the module
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.module.parameters())


@pytest.mark.parametrize(
    ("prefill", "layout"),
    [(True, "shared"), (False, "shared"), (True, "repeated")],
    ids=["prefill-shared", "repeated-shared", "prefill-repeated"],
)
@pytest.mark.parametrize("head", HIDDEN_HEADS)
def test_the_hf_engine_returns_the_states_a_pass_over_the_finished_sequences_gives(
    head, prefill, layout, tiny_model_dir, records, tiny_sampling, monkeypatch
):
    """Rollouts read the head's states from generation itself (no second forward); they equal a forward over the
    finished sequences, which is what engines without hidden states (vLLM) get: one shared-prefix row per request,
    or (attention that takes no 4-D mask, e.g. flash attention) the repeated layout."""
    if layout == "repeated":
        monkeypatch.setattr("invert4tvg.policy.hidden.MASKABLE_ATTENTION", ())
    torch.manual_seed(0)
    policy = policy_for(tiny_model_dir, head, for_training=True, head_width=32)
    train_briefly(policy, records, tiny_sampling, steps=20)  # so that completions contain the head's tokens
    requests = requests_for(policy, records, tiny_sampling)
    assert all(r.readout is not None for r in requests)
    engine = HFEngine(policy.model, policy.processor, prefill_once=prefill)
    completions = engine.generate(requests, SamplingParams(temperature=1.0, max_tokens=20, seed=1))
    flat = [(i, c) for i, group in enumerate(completions) for c in group]
    recomputed = policy.hidden_states(requests, flat)
    with_tokens = 0
    for (_, completion), expected in zip(flat, recomputed):
        got = completion.hidden
        torch.testing.assert_close(got.frames, expected.frames, atol=1e-4, rtol=1e-4)
        if completion.finish_reason == "stop":  # every head token was fed back before the end token
            assert got.token_ids == expected.token_ids, (completion.text, got.token_ids, expected.token_ids)
            torch.testing.assert_close(got.tokens, expected.tokens, atol=1e-4, rtol=1e-4)
            with_tokens += bool(got.token_ids)
    assert with_tokens >= 2
    # the spans decoded from either agree
    durations = [r.duration for r in records[:2]]
    from_engine = policy.decode_completions(requests, completions, durations)
    for group in completions:
        for c in group:
            c.hidden = None
    from_pass = policy.decode_completions(requests, completions, durations)
    for a, b in zip([d for g in from_engine for d in g], [d for g in from_pass for d in g]):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.span == pytest.approx(b.span, abs=1e-3)
    # inversion prompts are answered in text: nothing to read out
    assert requests_for(policy, records, tiny_sampling, task="vd", n=1)[0].readout is None
