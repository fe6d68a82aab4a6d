"""Qwen2.5-VL positions as the model was pretrained (``invert4tvg/modeling/positions.py``), pinned on a hand-computed
prompt (text, a video of three temporal grids, text) in every pass that builds them: the rule itself, the model's own
forward (plain layout: old / reference / update passes, readouts), the shared-prefix layout, and ``generate`` with
and without one prefill per prompt (prefill_once: HF rollouts, evaluation). tests/test_vllm_engine.py (make test-vllm) checks the same rule against vLLM's positions.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from transformers import BatchFeature, Qwen2_5_VLForConditionalGeneration

from invert4tvg.config import ModelArguments
from invert4tvg.modeling.positions import mrope_module, rope_index
from invert4tvg.modeling.prefill import prefill_once
from invert4tvg.modeling.sequences import SequenceBatch
from invert4tvg.modeling.shared_prefix import pack_groups
from invert4tvg.policy.loading import load_policy

# Video grid (t, h, w) = (3, 4, 6) patches, merged 2x2 -> 3 x 2 x 3 = 18 tokens; 0.75 s per temporal grid at
# tokens_per_second 2 -> temporal interval 1.5, so grids sit at floor(0, 1.5, 3.0) = 0, 1, 3.
GRID = (3, 4, 6)
SECONDS = 0.75
PAD = 2  # left padding of the second row

# Hand-computed: 3 text tokens at 0..2; the video starts at 3: temporal 3, 4, 6, height 3..4, width 3..5; the text
# after it starts at the video's largest position (6) + 1 = 7 (transformers 5.19 would start it at 3 + 6 // 2 = 6).
TEXT_BEFORE = [[0, 1, 2]] * 3
VIDEO = [
    [3] * 6 + [4] * 6 + [6] * 6,
    [3, 3, 3, 4, 4, 4] * 3,
    [3, 4, 5, 3, 4, 5] * 3,
]
TEXT_AFTER = [[7, 8]] * 3
PROMPT_POSITIONS = torch.tensor([a + b + c for a, b, c in zip(TEXT_BEFORE, VIDEO, TEXT_AFTER)])  # (3, 23)
COMPLETION = [9, 10, 11]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(
        ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32", freeze_vision_tower=False)
    )


LEAD = (2, 0)  # extra text tokens before the prompt per row: row 0 is unpadded, row 1 left-padded by PAD


def prompt_inputs(model, rows: int = 2) -> BatchFeature:
    """The hand-computed prompt per row; row 0 starts with LEAD[0] more text tokens, row 1 with PAD padding."""
    config = model.config
    text = 5  # an ordinary token
    ids = (
        [text, text, config.vision_start_token_id]
        + [config.video_token_id] * 18
        + [config.vision_end_token_id, text]
    )
    types = [0, 0, 0] + [2] * 18 + [0, 0]
    input_ids, mm_types, mask = [], [], []
    for row in range(rows):
        lead, pad = LEAD[row], PAD if row else 0
        input_ids.append([0] * pad + [text] * lead + ids)
        mm_types.append([0] * (pad + lead) + types)
        mask.append([0] * pad + [1] * (lead + len(ids)))
    assert len({len(r) for r in input_ids}) == 1
    generator = torch.Generator().manual_seed(0)
    patches = GRID[0] * GRID[1] * GRID[2]
    return BatchFeature(
        {
            "input_ids": torch.tensor(input_ids),
            "mm_token_type_ids": torch.tensor(mm_types),
            "attention_mask": torch.tensor(mask),
            "pixel_values_videos": torch.randn(rows * patches, 3 * 2 * 14 * 14, generator=generator),
            "video_grid_thw": torch.tensor([GRID] * rows),
            "second_per_grid_ts": torch.tensor([SECONDS] * rows),
        }
    )


def expected(row: int, completion: bool = False) -> torch.Tensor:
    """(3, L) positions of a row: zeros on its padding, its lead text, the hand-computed prompt, the completion
    (all shifted by the lead)."""
    lead = LEAD[row]
    pad = torch.zeros(3, PAD if row else 0, dtype=torch.long)
    after = torch.tensor([COMPLETION] * 3) if completion else torch.zeros(3, 0, dtype=torch.long)
    return torch.cat([pad, torch.arange(lead).expand(3, lead), PROMPT_POSITIONS + lead, after + lead], dim=1)


@contextmanager
def recorded_positions(model):
    """The (3, rows, L) mrope position ids of every language-model call inside the block (generate may prepend a
    row of plain text positions, dropped here)."""
    seen: list[torch.Tensor] = []

    def record(_module, _args, kwargs):
        positions = kwargs["position_ids"]
        positions = positions[1:] if positions.shape[0] == 4 else positions
        seen.append(
            positions.expand(3, -1, -1).clone()
        )  # a decoding step may send one row for all three axes

    hook = mrope_module(model).language_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield seen
    finally:
        hook.remove()


def test_the_rule_on_the_hand_computed_prompt(policy):
    inputs = prompt_inputs(policy.model)
    positions, deltas = rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
        attention_mask=inputs["attention_mask"],
        spatial_merge_size=2,
        tokens_per_second=2,
    )
    assert torch.equal(positions[:, 0], expected(0)) and torch.equal(positions[:, 1], expected(1))
    assert deltas.flatten().tolist() == [11 - 25, 9 - 23]  # the next token (index 25, 23) at 11, 9


def test_transformers_own_rule_still_differs(tiny_model_dir, policy):
    """Why the override exists. If this fails, transformers follows the original rule again: the override in
    invert4tvg/modeling/positions.py can go (check vLLM still agrees, tests/test_vllm_engine.py)."""
    plain = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir)
    inputs = prompt_inputs(plain, rows=1)
    theirs, _ = plain.model.get_rope_index(
        inputs["input_ids"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
    )
    # row 0's video starts at 5: transformers puts the text after it at 5 + max(4, 6) // 2 = 8, not at 8 + 1
    assert theirs[0, 0, -2:].tolist() == [8, 9]
    assert not torch.equal(theirs[:, 0], expected(0))


def with_completions(inputs: BatchFeature, completions: torch.Tensor) -> SequenceBatch:
    """A repeated-layout batch: each prompt row followed by its completion row (no padding inside)."""
    full = dict(inputs)
    full["input_ids"] = torch.cat([inputs["input_ids"], completions], 1)
    full["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(completions)], 1)
    full["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(completions)], 1)
    return SequenceBatch(BatchFeature(full), completions, torch.ones_like(completions))


def test_plain_layout_forward(policy):
    """Old / reference / update passes and readouts: the model's own forward over prompt + completion."""
    inputs = prompt_inputs(policy.model)
    batch = with_completions(inputs, torch.tensor([[7, 8, 9], [10, 11, 12]]))
    with recorded_positions(policy.model) as seen, torch.no_grad():
        policy.model(**batch.inputs, use_cache=False)
    assert torch.equal(seen[0][:, 0], expected(0, completion=True))
    assert torch.equal(seen[0][:, 1], expected(1, completion=True))


def test_shared_prefix_layout(policy):
    """Two groups of two completions (the second group's prompt padded): the prompt once, each completion after it."""
    one = prompt_inputs(policy.model)
    repeated = BatchFeature(
        {
            k: v.repeat_interleave(2, 0) if k not in ("pixel_values_videos",) else v
            for k, v in one.items()
            if k != "pixel_values_videos"
        }
    )
    patches = GRID[0] * GRID[1] * GRID[2]
    video = one["pixel_values_videos"].view(2, patches, -1).repeat_interleave(2, 0).reshape(4 * patches, -1)
    repeated["pixel_values_videos"] = video
    batch = with_completions(repeated, torch.tensor([[7, 8, 9], [10, 11, 12], [13, 14, 15], [16, 17, 18]]))
    shared = pack_groups(batch, 2, policy.model)
    for group in (0, 1):
        row = shared.position_ids[:, group]
        prompt = expected(group)
        assert torch.equal(row[:, : prompt.shape[1]], prompt)
        assert row[:, prompt.shape[1] :].tolist() == [[p + LEAD[group] for p in COMPLETION] * 2] * 3
    with recorded_positions(policy.model) as seen, torch.no_grad():
        policy.model(**shared.inputs, use_cache=False)
    assert torch.equal(seen[0], shared.position_ids)  # passed through, not recomputed


@pytest.mark.parametrize("prefill", [False, True], ids=["generate", "prefill-once"])
def test_generate(policy, prefill):
    """HF rollouts and evaluation: the prompt, then every new token one past the previous, from 9 on."""
    model = policy.model
    inputs = prompt_inputs(model)
    kwargs = prefill_once(model, inputs, [1, 1]) if prefill else dict(inputs)
    with recorded_positions(model) as seen, torch.no_grad():
        model.generate(**kwargs, max_new_tokens=3, do_sample=False, min_new_tokens=3)
    steps = seen
    last = [[10, 8], [11, 9], [12, 10]]  # per step, rows 0 and 1: the last prompt token, then one past
    if prefill:  # the prefill ran the prompt without its last token; generate starts there
        assert [s[:, :, -1].tolist() for s in steps] == [[pair] * 3 for pair in last]
    else:
        assert torch.equal(steps[0][:, 0], expected(0)) and torch.equal(steps[0][:, 1], expected(1))
        assert [s[:, :, -1].tolist() for s in steps[1:]] == [[pair] * 3 for pair in last[1:]]
