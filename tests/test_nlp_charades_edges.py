"""Verb extraction on the edge cases of real Charades-STA queries (issue 18, items 1-3): extra whitespace, nouns read as
verbs, missed verbs, and aspectual verbs left out of the inversion tasks' targets."""

from __future__ import annotations

import json
from collections import Counter
from importlib.resources import files

import pytest

import rewards
from invert4tvg.config import TaskArguments, parse_config
from invert4tvg.tasks import mask_query
from rewards import nlp


@pytest.fixture(autouse=True)
def offline_backend():
    nlp.set_backend("offline")
    nlp.set_aspectual_verbs(None)
    yield
    nlp.set_aspectual_verbs(None)
    nlp.set_backend(None)


def edge_rows() -> list[dict]:
    text = (files("rewards.nlp") / "data" / "verbs_edge.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_edge_set_has_the_cases_of_the_issue():
    texts = " ".join(r["text"] for r in edge_rows())
    for case in (
        "frying pan",
        "man cave",
        "stove",
        "that bag",
        "living room",
        "opens refrigerator grabs milk",
        "eat a sandwich stand up",
        "a  cup",
    ):
        assert case in texts


@pytest.mark.parametrize("row", edge_rows(), ids=lambda r: r["text"][:40])
def test_edge_set_exactly(row):
    assert Counter(nlp.verb_lemmas([row["text"]])[0]) == Counter(row["verbs"])


@pytest.mark.parametrize(
    "text",
    [
        "person drink from a  cup.",
        "person drink from a cup.",
        " person\tdrink  from\na cup. ",
        "person drink from a \u00a0cup.",
    ],
)
def test_whitespace_is_transparent(text):
    assert nlp.verb_lemmas([text]) == [["drink"]]
    assert mask_query(text).text.split() == ["person", "[]", "from", "a", "cup."]


def test_spans_point_into_the_original_text_after_normalising():
    text = "  the person\t\topens the door \n and  walks out "
    spans = nlp.verb_spans([text])[0]
    assert [(text[s:e], lemma) for s, e, lemma in spans] == [("opens", "open"), ("walks", "walk")]


def test_whitespace_tokens_are_transparent_in_the_tagger_itself():
    """Without the normalisation in front: spaCy's own token for a second space must not end the sentence."""
    from rewards.nlp.tagger import tag

    assert [lemma for pos, lemma in tag(["person", "drink", "from", "a", " ", "cup"]) if pos == "VERB"] == [
        "drink"
    ]


@pytest.mark.parametrize(
    ("query", "actions", "masked"),
    [
        ("person begins sneezing.", ["sneeze"], "person begins []."),
        ("the person starts to laugh", ["laugh"], "the person starts to []"),
        ("person tries to open the door", ["open"], "person tries to [] the door"),
        ("a person continues eating a sandwich", ["eat"], "a person continues [] a sandwich"),
        ("person keeps on walking", ["walk"], "person keeps on []"),
        ("person starts the car and drives away", ["start", "drive"], "person [] the car and [] away"),
        ("person tries on a jacket", ["try"], "person [] on a jacket"),
        ("the person starts.", ["start"], "the person []."),
    ],
)
def test_aspectual_verbs_are_not_actions(query, actions, masked):
    assert nlp.action_verb_lemmas([query]) == [actions]
    result = mask_query(query)
    assert (result.text, list(result.verbs)) == (masked, actions)


def answer(text: str) -> str:
    return f"<think>t</think><answer>{text}</answer>"


def test_inversion_rewards_leave_aspectual_verbs_out_by_default():
    query = "person begins sneezing"
    masked = mask_query(query)
    vc = rewards.get("vc")(
        [answer("the person sneezes"), answer("person [begins] [sneezing]"), answer("begins")],
        query=[query] * 3,
        masked_query=[masked.text] * 3,
        masked_verbs=[list(masked.verbs)] * 3,
    )
    assert vc == [1.0, 1.0, 0.0]
    ar = rewards.get("ar")([answer("begin"), answer("sneeze"), answer("begins sneezing")], query=[query] * 3)
    assert ar == [0.0, 1.0, 1.0]
    vd = rewards.get("vd")(
        [answer("the person sneezes"), answer("a person begins to cough")], query=[query] * 2
    )
    assert vd == [1.0, 0.0]
    # Derived from the query and the masked query (no masked_verbs column): the same target.
    assert rewards.get("vc")([answer("the person sneezes")], query=[query], masked_query=[masked.text]) == [
        1.0
    ]


def test_an_empty_list_keeps_every_verb_as_the_public_code_does():
    nlp.set_aspectual_verbs([])
    query = "person begins sneezing"
    assert mask_query(query).text == "person [] []"
    assert rewards.get("ar")([answer("begin")], query=[query]) == [1.0]
    assert rewards.get("vd")([answer("the person sneezes")], query=[query]) == [0.0]
    nlp.set_aspectual_verbs(["sneeze"])  # any list: the lemma is left out when another verb follows it
    assert nlp.action_verb_lemmas(["person sneezes and laughs"]) == [["sneeze", "laugh"]]
    assert nlp.aspectual_verbs() == frozenset({"sneeze"})


def test_config_field_defaults_to_the_list_and_accepts_an_empty_one(tmp_path):
    (default,) = parse_config((TaskArguments,), [])
    assert (
        set(default.aspectual_verbs)
        == set(nlp.ASPECTUAL_VERBS)
        >= {"begin", "start", "proceed", "try", "continue"}
    )
    config = tmp_path / "c.yaml"
    config.write_text("aspectual_verbs: []\n")
    (empty,) = parse_config((TaskArguments,), ["--config", str(config)])
    assert empty.aspectual_verbs == []
    assert "begins sneezing" in TaskArguments.__dataclass_fields__["aspectual_verbs"].metadata["help"]
