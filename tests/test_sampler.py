"""TaskSampler: task frequencies (within sampling error), ablation settings, fallbacks and exact resume."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from invert4tvg.data.records import GroundingRecord
from invert4tvg.tasks import TaskSampler

DRAWS = 20_000


def within(observed: int, total: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(observed - total * p) <= sigmas * math.sqrt(total * p * (1 - p)) + 1e-9


def iteration_frequencies(sampler: TaskSampler, draws: int = DRAWS) -> Counter:
    counts: Counter = Counter()
    for _ in range(draws):
        batch = sampler.draw(4)
        assert len(set(batch)) == 1  # one task for the whole iteration (Algorithm 1)
        counts[batch[0]] += 1
    return counts


def test_per_iteration_default_frequencies():
    counts = iteration_frequencies(TaskSampler(seed=1))
    assert within(counts["tvg"], DRAWS, 0.8)
    for task in ("vc", "ar", "vd"):
        assert within(counts[task], DRAWS, 0.2 / 3)


def test_weights_and_task_subsets():
    counts = iteration_frequencies(
        TaskSampler(p=0.5, invert_tasks=("ar", "vd"), weights={"ar": 3, "vd": 1}, seed=2)
    )
    assert set(counts) == {"tvg", "ar", "vd"}
    assert within(counts["tvg"], DRAWS, 0.5) and within(counts["ar"], DRAWS, 0.375)
    only_vc = iteration_frequencies(TaskSampler(p=0.7, invert_tasks=["vc"], seed=3), 2000)
    assert set(only_vc) == {"tvg", "vc"}


def test_per_sample_frequencies():
    sampler = TaskSampler(p=0.6, weights=[1, 1, 2], mode="per_sample", seed=4)
    tasks = [t for _ in range(DRAWS // 8) for t in sampler.draw(8)]
    counts = Counter(tasks)
    assert within(counts["tvg"], len(tasks), 0.6)
    assert within(counts["vd"], len(tasks), 0.2) and within(counts["vc"], len(tasks), 0.1)
    assert sampler.counts == counts


@pytest.mark.parametrize("mode", ["per_iteration", "per_sample"])
def test_extreme_probabilities(mode):
    assert set(TaskSampler(p=1.0, invert_tasks=(), mode=mode).draw(50)) == {"tvg"}  # the Time-R1 baseline
    assert "tvg" not in {t for _ in range(200) for t in TaskSampler(p=0.0, mode=mode, seed=5).draw(3)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p": 1.2}, "p must be in"),
        ({"p": 0.5, "invert_tasks": ()}, "at least one inversion task"),
        ({"invert_tasks": ("vc", "qa")}, "invert_tasks must be"),
        ({"weights": [1, 2]}, "2 weights for 3"),
        ({"weights": [0, 0, 0]}, "not all zero"),
        ({"weights": {"tvg": 1}}, "not in invert_tasks"),
        ({"mode": "per_epoch"}, "mode must be"),
    ],
)
def test_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskSampler(**kwargs)


@pytest.mark.parametrize("mode", ["per_iteration", "per_sample"])
def test_exact_resume(mode):
    sampler = TaskSampler(p=0.5, mode=mode, seed=7)
    for _ in range(37):
        sampler.draw(5)
    state = json.loads(json.dumps(sampler.state_dict()))  # survives a JSON checkpoint
    expected = [sampler.draw(5) for _ in range(50)]
    resumed = TaskSampler(p=0.5, mode=mode, seed=7)
    resumed.load_state_dict(state)
    assert [resumed.draw(5) for _ in range(50)] == expected
    assert resumed.counts == sampler.counts and resumed.iterations == sampler.iterations == 87
    with pytest.raises(ValueError, match="config differs"):
        TaskSampler(p=0.9, mode=mode, seed=7).load_state_dict(state)
    TaskSampler(p=0.9, mode=mode, seed=7).load_state_dict(state, strict=False)


def records() -> list[GroundingRecord]:
    queries = ["person closes the door", "a red cup on the table", "person sits down", "the kitchen at night"]
    return [GroundingRecord(f"r{i}", "v", "/v.mp4", 30.0, 1.0, 5.0, q, "test") for i, q in enumerate(queries)]


def test_fallback_to_tvg_is_counted():
    sampler = TaskSampler(seed=0)
    instances = sampler.make_instances(records(), ["vc", "vc", "ar", "vd"])
    assert [i.task for i in instances] == ["vc", "tvg", "ar", "tvg"]
    assert [i.video.clip for i in instances] == [(1.0, 5.0), None, (1.0, 5.0), None]
    assert sampler.fallbacks == {"vc": 1, "vd": 1}
    assert json.loads(json.dumps(sampler.state_dict()))["fallbacks"] == {"vc": 1, "vd": 1}
    with pytest.raises(ValueError, match="4 records but 1 tasks"):
        sampler.make_instances(records(), ["tvg"])


def test_one_verb_masking_resumes_exactly():
    recs = [
        GroundingRecord("r", "v", "/v.mp4", 30.0, 1.0, 5.0, "person sits down, drinks and reads", "t")
    ] * 6
    sampler = TaskSampler(seed=9)
    sampler.make_instances(recs[:2], ["vc"] * 2, mask="one")
    state = sampler.state_dict()
    expected = [i.prompt for i in sampler.make_instances(recs, ["vc"] * 6, mask="one")]
    resumed = TaskSampler(seed=9)
    resumed.load_state_dict(state)
    assert [i.prompt for i in resumed.make_instances(recs, ["vc"] * 6, mask="one")] == expected
    assert len(set(expected)) > 1  # the masked verb varies from draw to draw


def test_sample_draws_and_builds():
    sampler = TaskSampler(p=0.0, invert_tasks=("ar",), seed=1)
    instances = sampler.sample(records())
    assert [i.task for i in instances] == ["ar", "tvg", "ar", "tvg"] and sampler.fallbacks == {"ar": 2}
