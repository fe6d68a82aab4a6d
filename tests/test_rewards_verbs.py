"""vc, ar and vd rewards on hand-labelled cases (the paper's examples first)."""

from __future__ import annotations

import pytest

import rewards


def answer(text: str, think: str = "I watched the clip.") -> str:
    return f"<think>{think}</think> <answer>{text}</answer>"


def vc(answers, query, masked_query, masked_verbs=None):
    n = len(answers)
    columns = {"query": [query] * n, "masked_query": [masked_query] * n}
    if masked_verbs is not None:
        columns["masked_verbs"] = [masked_verbs] * n
    return rewards.get("vc")([answer(a) for a in answers], **columns)


def ar(answers, query):
    return rewards.get("ar")([answer(a) for a in answers], query=[query] * len(answers))


def vd(answers, query):
    return rewards.get("vd")([answer(a) for a in answers], query=[query] * len(answers))


@pytest.mark.parametrize("with_column", [True, False])
def test_vc_paper_example(with_column):
    masked = ["close"] if with_column else None
    out = vc(
        [
            "Person [closes] the door",
            "closes",
            "Closing.",
            "Person [closed] the door",
            "Person [opens] the door",
        ],
        "Person closed the door",
        "Person [] the door",
        masked,
    )
    assert out == [1.0, 1.0, 1.0, 1.0, 0.0]


def test_vc_every_masked_verb_is_needed():
    query, masked = "person closes the door and walks out", "person [] the door and [] out"
    out = vc(
        [
            "person [closes] the door and [walks] out",
            "person shuts the door and walks out",
            "person closes the door and runs out",
            "closes, walks",
        ],
        query,
        masked,
        ["close", "walk"],
    )
    assert out == [1.0, 0.0, 0.0, 1.0]


def test_vc_derives_masked_verbs_when_one_verb_is_masked():
    # Only "walks" is masked; "closes" is still visible, so recovering it alone is not enough.
    out = vc(
        ["person closes the door and walks out", "person closes the door"],
        "person closes the door and walks out",
        "person closes the door and [] out",
    )
    assert out == [1.0, 0.0]


def test_vc_noun_use_does_not_count_and_think_is_ignored():
    query, masked = "person drinks from a cup", "person [] from a cup"
    assert vc(["person takes a drink from a cup"], query, masked, ["drink"]) == [0.0]
    text = "<think>the person drinks</think><answer>person [sips] from a cup</answer>"
    assert rewards.get("vc")([text], masked_verbs=[["drink"]]) == [0.0]
    assert rewards.get("vc")(["person drinks from a cup"], masked_verbs=[["drink"]]) == [
        0.0
    ]  # no answer block


def test_vc_masked_verbs_as_string_and_unicode_answers():
    assert rewards.get("vc")([answer("Person [closes] the door 🚪")], masked_verbs=["close"]) == [1.0]
    assert rewards.get("vc")([answer("Personne [ferme] la porte")], masked_verbs=["close"]) == [0.0]
    assert rewards.get("vc")([answer("ＣＬＯＳＥＳ")], masked_verbs=["close"]) == [0.0]


def test_vc_errors_name_the_column():
    with pytest.raises(rewards.MissingColumnError, match=r"'vc'.*masked_verbs"):
        rewards.get("vc")([answer("closes")], query=["person closes the door"])
    with pytest.raises(
        rewards.RewardSampleError, match=r"'vc': sample 1: .*'masked_verbs'.*no verb is masked"
    ):
        rewards.get("vc")([answer("closes")] * 2, masked_verbs=[["close"], []])


def test_ar_paper_example_and_forms():
    query = "A person walks away and laughs"
    out = ar(
        ["walk", "laugh", "Laughing.", "walked", "The person is walking away.", "run", "door", ""], query
    )
    assert out == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_ar_uses_the_first_verb_of_a_longer_answer():
    assert ar(["He sits down and walks", "walks and sits"], "A person walks away") == [0.0, 1.0]


def test_ar_irregular_forms():
    assert ar(["sit", "sitting", "sat", "stand"], "person sat on the sofa") == [1.0, 1.0, 1.0, 0.0]
    assert ar(["take", "took"], "person took a towel from the closet") == [1.0, 1.0]


def test_ar_query_without_verb_is_a_clear_error():
    with pytest.raises(rewards.RewardSampleError, match=r"'ar': sample 0: .*'query'.*has no verb"):
        ar(["walk"], "a red door in the kitchen")
    assert rewards.build("ar", on_error="zero")([answer("walk")], query=["a red door"]) == [0.0]


def test_vd_paper_example():
    assert vd(["A person jumps and laughs", "A person laughs", "Jumping."], "a person jumps") == [
        1.0,
        0.0,
        1.0,
    ]


def test_vd_needs_every_query_verb_as_a_verb():
    query = "person takes a towel and leaves"
    out = vd(
        [
            "The person took a towel and left.",
            "The person takes a towel.",
            "A person leaving after taking a towel",
            "A towel and a take of the leaves",  # nouns only
        ],
        query,
    )
    assert out == [1.0, 0.0, 1.0, 0.0]
    assert vd(["a person holds a drink"], "person drinks coffee") == [0.0]


def test_no_answer_block_scores_zero():
    texts = ["walk", "<think>walk</think>", "<answer>walk", "walk</answer>"]
    assert rewards.get("ar")(texts, query=["a person walks"] * 4) == [0.0] * 4
    assert rewards.get("vd")(texts, query=["a person walks"] * 4) == [0.0] * 4


def test_verb_rewards_score_only_their_task():
    texts = [answer("walk")] * 4
    columns = {
        "task": ["tvg", "vc", "ar", "vd"],
        "query": ["a person walks"] * 4,
        "masked_query": ["", "a person []", "", ""],
        "masked_verbs": [[], ["walk"], [], []],
    }
    assert rewards.get("vc")(texts, **columns) == [None, 1.0, None, None]
    assert rewards.get("ar")(texts, **columns) == [None, None, 1.0, None]
    assert rewards.get("vd")(texts, **columns) == [None, None, None, 1.0]


def test_huge_answer_does_not_raise():
    text = answer("a person walks " + "and then waits " * 200_000)  # 3 M characters
    assert rewards.get("vd")([text], query=["a person walks"]) == [1.0]
