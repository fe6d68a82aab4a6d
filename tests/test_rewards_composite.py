"""The task-dispatching invert4tvg reward (eqs. 10-12) and its per-component breakdown."""

from __future__ import annotations

import pytest

import rewards


def wrap(answer: str, think: str = "looking") -> str:
    return f"<think>{think}</think> <answer>{answer}</answer>"


# One sample per task plus a malformed TVG answer; columns as TaskInstance / reward_columns produce them.
COMPLETIONS = [
    wrap("2.5 to 7.5"),  # tvg: IoU 1/3 with [5, 10]
    wrap("Person [closes] the door"),  # vc
    "<answer>walk</answer>",  # ar, right verb but no think: format 0
    wrap("A person walks away and laughs."),  # vd
    "5 to 10",  # tvg without tags: 0 + 0
]
COLUMNS = {
    "task": ["tvg", "vc", "ar", "vd", "tvg"],
    "query": ["x", "Person closed the door", "A person walks away", "a person walks and laughs", "x"],
    "start": [5.0, 0.0, 0.0, 0.0, 5.0],
    "end": [10.0, 1.0, 1.0, 1.0, 10.0],
    "duration": [30.0] * 5,
    "masked_query": ["", "Person [] the door", "", "", ""],
    "masked_verbs": [[], ["close"], [], [], []],
}


def test_mixed_batch_totals_and_components():
    breakdown = rewards.get("invert4tvg").score(COMPLETIONS, **COLUMNS)
    assert breakdown.components == {
        "format": [1.0, 1.0, 0.0, 1.0, 0.0],
        "iou": [pytest.approx(1 / 3), None, None, None, 0.0],
        "vc": [None, 1.0, None, None, None],
        "ar": [None, None, 1.0, None, None],
        "vd": [None, None, None, 1.0, None],
    }
    assert breakdown.total == [pytest.approx(4 / 3), 2.0, 1.0, 2.0, 0.0]
    assert rewards.get("invert4tvg")(COMPLETIONS, **COLUMNS) == breakdown.total


def test_weights_from_config():
    reward = rewards.build("invert4tvg", weights={"format": 0.5, "vc": 2.0, "iou": 3.0})
    assert reward(COMPLETIONS, **COLUMNS) == [pytest.approx(0.5 + 1.0), 2.5, 1.0, 1.5, 0.0]
    with pytest.raises(ValueError, match="unknown reward weight 'accuracy'"):
        rewards.build("invert4tvg", weights={"accuracy": 1.0})


def test_task_column_is_required_and_checked():
    reward = rewards.get("invert4tvg")
    columns = {k: v for k, v in COLUMNS.items() if k != "task"}
    with pytest.raises(rewards.MissingColumnError, match=r"'invert4tvg'.*'task'"):
        reward(COMPLETIONS, **columns)
    with pytest.raises(rewards.RewardError, match="sample 2: unknown task 'qa'"):
        reward(COMPLETIONS, **(COLUMNS | {"task": ["tvg", "vc", "qa", "vd", "tvg"]}))


def test_errors_report_the_index_in_the_full_batch():
    columns = COLUMNS | {"masked_verbs": [[], [], [], [], []]}  # sample 1 (the only vc) masks nothing
    with pytest.raises(rewards.RewardSampleError, match=r"'vc': sample 1: .*no verb is masked"):
        rewards.get("invert4tvg")(COMPLETIONS, **columns)
    lenient = rewards.build("invert4tvg", on_error="zero")
    assert lenient(COMPLETIONS, **columns)[1] == 1.0  # format still counts; vc scored 0
    assert lenient.errors == 1


def test_plugin_task_reward_with_error_mapping():
    def strict_iou(completions, start, end, **columns):
        if any(s > 6 for s in start):
            raise ValueError("late start")
        return rewards.get("iou")(completions, start=start, end=end)

    reward = rewards.build("invert4tvg", task_rewards={"tvg": strict_iou})
    columns = COLUMNS | {"start": [5.0, 0.0, 0.0, 0.0, 7.0]}
    with pytest.raises(rewards.RewardSampleError, match="'strict_iou': sample 4: ValueError: late start"):
        reward(COMPLETIONS, **columns)
    assert reward(COMPLETIONS, **COLUMNS)[0] == pytest.approx(4 / 3)


def test_only_tvg_batch_leaves_inversion_slots_empty():
    reward = rewards.get("invert4tvg")
    out = reward.score(COMPLETIONS[:1], **{k: v[:1] for k, v in COLUMNS.items()}).components
    assert out["vc"] == out["ar"] == out["vd"] == [None]


def test_cosine_inversion_swaps_the_inversion_rewards():
    class Onehot:
        name = "one-hot test vectors"

        def embed(self, words):
            import numpy as np

            return np.array([[1.0, 0.0] if w in ("close", "walk", "laugh") else [0.0, 1.0] for w in words])

    reward = rewards.build("invert4tvg", inversion="cosine", embedder=Onehot())
    breakdown = reward.score(COMPLETIONS, **COLUMNS)
    assert breakdown.components["vc"] == [None, 1.0, None, None, None]  # filled by the cosine reward
    assert breakdown.total[1] == 2.0
