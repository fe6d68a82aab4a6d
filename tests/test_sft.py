"""Invert-SFT targets: what the warm start teaches for each inversion prompt is exactly what its reward accepts."""

from __future__ import annotations

import pytest

import rewards
from invert4tvg.config import ModelArguments
from invert4tvg.data.formats import load_records
from invert4tvg.policy.loading import load_policy
from invert4tvg.sft.trainer import supervised_example
from invert4tvg.tasks import build_task_instance


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir)), for_training=False)


@pytest.fixture(scope="module")
def records(tiny_bench):
    return load_records("tvg-json", tiny_bench / "train.json", video_dir=tiny_bench / "videos").records[:8]


@pytest.mark.parametrize("task", ["vc", "ar", "vd"])
def test_inversion_targets_earn_their_reward(policy, records, tiny_sampling, task):
    for record in records:
        instance = build_task_instance(record, task, tiny_sampling)
        example = supervised_example(policy, record, instance, video=None)
        score = rewards.get(task)([example.target], **{k: [v] for k, v in instance.columns.items()})
        assert score == [1.0], (task, record.query, example.target)
        assert rewards.get("format")([example.target]) == [1.0]


def test_ar_target_is_one_verb_as_the_query_writes_it(policy, records, tiny_sampling):
    record = next(r for r in records if len(r.query.split()) > 2)
    example = supervised_example(policy, record, build_task_instance(record, "ar", tiny_sampling), None)
    answer = example.target.split("<answer>")[1].removesuffix("</answer>")
    assert " " not in answer and answer in record.query


def test_grounding_target_is_the_span(policy, records, tiny_sampling):
    record = records[0]
    example = supervised_example(policy, record, build_task_instance(record, "tvg", tiny_sampling), None)
    columns = build_task_instance(record, "tvg", tiny_sampling).columns
    assert rewards.get("iou")([example.target], **{k: [v] for k, v in columns.items()}) == [1.0]
