"""format and iou rewards, span parsing, completion formats, column errors and the error policy."""

from __future__ import annotations

import math

import pytest

import rewards
from rewards import parse_span, temporal_iou

GOOD = "<think>The door closes near the start.</think> <answer>2.50 to 7.50</answer>"


def fmt(completions):
    return rewards.get("format")(completions)


def iou(completions, start=5.0, end=10.0, **extra):
    n = len(completions)
    return rewards.get("iou")(completions, start=[start] * n, end=[end] * n, **extra)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD, 1.0),
        ("  \n" + GOOD + "\n\n", 1.0),  # stripped before matching
        ("<think>multi\nline\nthought</think>\n\n<answer>a\nb</answer>", 1.0),  # dot matches newlines
        ("<think></think><answer></answer>", 1.0),
        ("<answer>2 to 3</answer>", 0.0),  # no think
        ("<think>x</think>", 0.0),  # no answer
        ("<think>x</think> text <answer>2 to 3</answer>", 0.0),  # only whitespace between the blocks
        ("<think>x</think><answer>2 to 3</answer> trailing", 0.0),  # full match required
        ("prefix <think>x</think><answer>2 to 3</answer>", 0.0),
        ("<answer>1 to 2</answer><think>x</think>", 0.0),  # wrong order
        ("<THINK>x</THINK><ANSWER>1 to 2</ANSWER>", 0.0),  # tags are case-sensitive, as in the public code
        ("", 0.0),
        ("<think>日本語の考え</think><answer>ドアを閉める</answer>", 1.0),
    ],
)
def test_format(text, expected):
    assert fmt([text]) == [expected]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("5 to 10", 1.0),
        ("5.00 to 10.00", 1.0),
        ("0 to 10", 0.5),  # inter 5, union 10
        ("7.5 to 12.5", 2.5 / 7.5),
        ("10 to 20", 0.0),  # touching, no overlap
        ("6 and 8", 0.4),  # "and" form
        ("6 AND 8", 0.4),  # case-insensitive
        ("between 6 To 8 seconds", 0.4),
        ("1 to 2, no wait: 6 to 8", 0.4),  # the last match counts
        ("6 to 8 or maybe 20 to 30", 0.0),
        ("8 to 6", 0.0),  # reversed
        ("-3 to 8", 0.0),  # negative start is not read as "3 to 8"
        ("6 to -8", 0.0),
        ("six to eight", 0.0),
        ("6-8", 0.0),
        ("", 0.0),
        ("5. to 10.", 1.0),  # trailing dot parses, as with the public pattern
        ("9" * 400 + " to " + "9" * 401, 0.0),  # overflows to inf
        ("٥ to ١٠", 0.0),  # non-ASCII digits are not numbers here
        ("5 to 5", 0.0),  # zero-length prediction, non-zero ground truth
    ],
)
def test_iou_hand_computed(answer, expected):
    (score,) = iou([f"<think>t</think><answer>{answer}</answer>"])
    assert score == pytest.approx(expected)


def test_iou_reads_only_the_last_answer_block():
    text = "<think>5 to 10</think><answer>5 to 10</answer> more <answer>0 to 1</answer>"
    assert iou([text]) == [0.0]
    assert iou(["<think>x</think> 5 to 10"]) == [0.0]  # numbers outside an answer block do not count
    assert iou(["<answer>5 to 10</answer>"]) == [1.0]  # format is a separate reward


def test_iou_zero_length_union_never_raises():
    assert iou(["<answer>3 to 3</answer>"], start=3.0, end=3.0) == [0.0]
    assert temporal_iou((3, 3), (3, 3)) == 0.0
    assert temporal_iou((0, math.inf), (1, 2)) == 0.0
    assert temporal_iou((2, 1), (0, 5)) == 0.0


def test_iou_clip_option():
    text = ["<answer>5 to 40</answer>"]  # the video is 20 s long
    assert iou(text, start=5.0, end=20.0) == [pytest.approx(15 / 35)]
    clipped = rewards.build("iou", clip=True)
    assert clipped(text, start=[5.0], end=[20.0], duration=[20.0]) == [1.0]
    with pytest.raises(rewards.MissingColumnError, match=r"'iou'.*'duration'"):
        clipped(text, start=[5.0], end=[20.0])


def test_parse_span_matches_iou_parsing():
    assert parse_span("<answer>The event: 1.25 to 3.5 s</answer>") == (1.25, 3.5)
    assert parse_span("<answer>4 to 2</answer>") is None
    assert parse_span("1 to 2") is None
    assert parse_span("1 to 2", require_answer=False) == (1.0, 2.0)
    assert parse_span("<answer>nothing</answer>") is None


def test_trl_message_completions():
    messages = [{"role": "assistant", "content": GOOD}]
    parts = [{"role": "assistant", "content": [{"type": "text", "text": GOOD}]}]
    with_prompt = [{"role": "user", "content": "question 5 to 10"}, {"role": "assistant", "content": GOOD}]
    assert fmt([messages, parts, with_prompt]) == [1.0, 1.0, 1.0]
    assert iou([messages], start=2.5, end=7.5) == [1.0]


def test_missing_column_names_reward_and_column():
    with pytest.raises(rewards.MissingColumnError, match=r"reward 'iou': needs column 'end'"):
        rewards.get("iou")([GOOD], start=[1.0])
    with pytest.raises(rewards.ColumnLengthError, match="'start' has 2 values for 1 completions"):
        rewards.get("iou")([GOOD], start=[1.0, 2.0], end=[3.0])


def test_fail_fast_names_reward_index_and_column():
    reward = rewards.get("iou")
    with pytest.raises(rewards.RewardSampleError, match=r"'iou': sample 1: .*column 'start'") as info:
        reward([GOOD, GOOD], start=[1.0, "soon"], end=[3.0, 4.0])
    assert info.value.index == 1 and info.value.column == "start"
    with pytest.raises(rewards.RewardSampleError, match=r"sample 0: .*end 1.0 is before start 3.0"):
        reward([GOOD], start=[3.0], end=[1.0])
    with pytest.raises(rewards.RewardSampleError, match="sample 0: TypeError"):
        reward([42], start=[1.0], end=[2.0])


def test_zero_policy_scores_zero_and_counts():
    reward = rewards.build("iou", on_error="zero")
    scores = reward([GOOD, GOOD, 42], start=[2.5, float("nan"), 1.0], end=[7.5, 3.0, 2.0])
    assert scores == [1.0, 0.0, 0.0]
    assert reward.errors == 2
    with pytest.raises(rewards.MissingColumnError):  # configuration errors raise under any policy
        reward([GOOD], start=[1.0])


def test_iou_applies_only_to_tvg_samples_and_ignores_extra_trl_kwargs():
    out = rewards.get("iou")(
        [GOOD, GOOD],
        task=["tvg", "vc"],
        start=[2.5, 0.0],
        end=[7.5, 1.0],
        prompts=["p", "p"],
        completion_ids=[[1], [2]],
        trainer_state=object(),
    )
    assert out == [1.0, None]
