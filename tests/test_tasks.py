"""Prompts, verb masking and task instances; instances feed the rewards end to end."""

from __future__ import annotations

import numpy as np
import pytest

import rewards
from invert4tvg.data.frames import VideoSampling, VideoSpec
from invert4tvg.data.records import GroundingRecord
from invert4tvg.tasks import (
    MASK,
    REWARD_COLUMNS,
    TASKS,
    NoVerbError,
    PromptTemplates,
    TaskUnavailable,
    build_task_instance,
    mask_query,
    reward_columns,
    template_corpus,
)


def record(
    query: str = "person closes the door and walks out", start: float = 2.5, end: float = 8.0
) -> GroundingRecord:
    return GroundingRecord("r1", "v1", "/videos/v1.mp4", 30.0, start, end, query, "charades")


def test_default_prompts_use_the_papers_wording_and_the_answer_format():
    templates = PromptTemplates()
    assert templates.render("vc", query="q", masked_query="Person [] the door").startswith(
        "Add a verb for the event 'Person [] the door' based on the video"
    )
    assert templates.ar.startswith("Use a verb to describe the event based on the video")
    assert templates.vd.startswith("Describe what people have done based on the video")
    tvg = templates.render("tvg", query="person sits down", duration=31.456)
    assert "'person sits down'" in tvg and "31.46 seconds" in tvg and "two decimals" in tvg
    for task in TASKS:
        text = templates.render(task, query="q", masked_query="q []", duration=1.0)
        assert "<think></think>" in text and "<answer></answer>" in text
        assert len(text) < 260  # short prompts: the CPU demo pays for every token


def test_tvg_prompt_example_answer_is_parsed_by_the_iou_reward():
    example = PromptTemplates().render("tvg", query="q", duration=1.0).split("like ", 1)[1]
    assert rewards.parse_span(example) == (4.2, 9.85)


def test_templates_from_config():
    templates = PromptTemplates.from_config(
        {"ar": "Name the action. <answer></answer>", "system": "Be brief."}
    )
    assert templates.ar == "Name the action. <answer></answer>" and templates.vd == PromptTemplates().vd
    with pytest.raises(ValueError, match="unknown prompt template"):
        PromptTemplates.from_config({"qa": "x"})
    with pytest.raises(ValueError, match=r"uses \{video\}; available fields"):
        PromptTemplates.from_config({"tvg": "Where is {video}?"})
    with pytest.raises(ValueError, match="not a valid format string"):
        PromptTemplates.from_config({"tvg": "unbalanced {query"})


def test_template_corpus_is_the_default_text():
    corpus = template_corpus()
    assert len(corpus) == 4 and not any("{" in text for text in corpus)
    assert any("Describe what people have done" in text for text in corpus)


def test_mask_all_verbs():
    masked = mask_query("person closes the door and walks out")
    assert masked.text == f"person {MASK} the door and {MASK} out"
    assert masked.verbs == ("close", "walk")
    assert mask_query("Person closed the door").text == "Person [] the door"


def test_mask_one_verb_is_seeded():
    query = "person sits down, drinks coffee and reads a book"
    first = mask_query(query, "one", np.random.default_rng(3))
    assert first.text.count(MASK) == 1 and len(first.verbs) == 1
    assert first == mask_query(query, "one", np.random.default_rng(3))
    assert mask_query(query, "one") == mask_query(query, "one")  # no rng: seeded by the text
    chosen = {mask_query(query, "one", np.random.default_rng(s)).verbs[0] for s in range(40)}
    assert chosen == {"sit", "drink", "read"}


def test_query_without_verb_cannot_be_masked():
    with pytest.raises(NoVerbError):
        mask_query("a red cup on the kitchen table")
    with pytest.raises(ValueError, match="mask mode"):
        mask_query("person sits", "some")


def test_instances_per_task():
    sampling = VideoSampling(fps=1.0)
    for task in TASKS:
        inst = build_task_instance(record(), task, sampling)
        assert inst.task == task and inst.record_id == "r1"
        assert inst.messages == [
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": inst.prompt}]}
        ]
        clip = None if task == "tvg" else (2.5, 8.0)
        assert inst.video == VideoSpec("/videos/v1.mp4", clip, sampling)
        assert tuple(inst.columns) == REWARD_COLUMNS and inst.columns["task"] == task
    vc = build_task_instance(record(), "vc")
    assert vc.columns["masked_query"] == "person [] the door and [] out"
    assert vc.columns["masked_verbs"] == ["close", "walk"]
    assert (
        build_task_instance(record(), "vc", mask="one", rng=np.random.default_rng(0)).prompt.count(MASK) == 1
    )
    system = build_task_instance(record(), "ar", templates=PromptTemplates(system="Be brief.")).messages
    assert system[0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}


def test_unavailable_tasks():
    no_verb = record("a red cup on the kitchen table")
    assert build_task_instance(no_verb, "tvg").task == "tvg"
    for task in ("vc", "ar", "vd"):
        with pytest.raises(NoVerbError):
            build_task_instance(no_verb, task)
    with pytest.raises(TaskUnavailable, match="empty ground-truth clip"):
        build_task_instance(record(start=4.0, end=4.0), "ar")
    with pytest.raises(ValueError, match="unknown task"):
        build_task_instance(record(), "qa")


def test_instance_columns_feed_the_composite_reward():
    instances = [build_task_instance(record(), task) for task in TASKS]
    columns = reward_columns(instances, num_generations=2)
    assert columns["task"] == ["tvg", "tvg", "vc", "vc", "ar", "ar", "vd", "vd"]
    completions = [
        "<think>t</think><answer>2.5 to 8</answer>",
        "<think>t</think><answer>20 to 25</answer>",
        "<think>t</think><answer>person [closes] the door and [walks] out</answer>",
        "<think>t</think><answer>person [opens] the door and [walks] out</answer>",
        "<think>t</think><answer>walking</answer>",
        "<think>t</think><answer>sitting</answer>",
        "<think>t</think><answer>Someone closed a door, then walked out.</answer>",
        "<think>t</think><answer>Someone walked out.</answer>",
    ]
    assert rewards.get("invert4tvg")(completions, **columns) == [2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0]
