"""The NLP backend: accuracy on the labelled query sets, specific hard cases, caching, spaCy registration."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import Counter
from importlib.resources import files

import pytest
import spacy

from rewards import nlp

DATA = files("rewards.nlp") / "data"


def load_set(name: str) -> list[dict]:
    return [
        json.loads(line) for line in (DATA / f"verbs_{name}.jsonl").read_text().splitlines() if line.strip()
    ]


def precision_recall(rows: list[dict]) -> tuple[float, float, list]:
    predicted = nlp.verb_lemmas([r["text"] for r in rows])
    tp = fp = fn = 0
    misses = []
    for row, pred in zip(rows, predicted):
        hit = sum((Counter(pred) & Counter(row["verbs"])).values())
        tp, fp, fn = tp + hit, fp + len(pred) - hit, fn + len(row["verbs"]) - hit
        if hit != len(pred) or hit != len(row["verbs"]):
            misses.append((row["text"], row["verbs"], pred))
    return tp / (tp + fp), tp / (tp + fn), misses


@pytest.fixture(autouse=True, scope="module")
def offline_backend():
    # The labelled sets measure the offline pipeline; en_core_web_sm, where installed, is tested separately.
    nlp.set_backend("offline")
    yield
    nlp.set_backend(None)


def test_labelled_test_set_has_the_hard_words():
    rows = load_set("test")
    assert len(rows) >= 100
    words = {w.strip(".,").lower() for r in rows for w in r["text"].split()}
    assert {"cup", "light", "drink", "watch", "dress"} <= words  # nouns that are also verbs
    assert {"sat", "took", "ran", "put", "ate"} <= words  # irregular forms
    gold = {v for r in rows for v in r["verbs"]}
    assert {"cup", "light", "drink", "watch", "dress"} <= gold  # ... and each also used as a verb somewhere


@pytest.mark.parametrize("name", ["test", "challenge", "edge", "edge_heldout"])
def test_precision_and_recall(name):
    precision, recall, misses = precision_recall(load_set(name))
    assert precision >= 0.95 and recall >= 0.95, misses


@pytest.mark.parametrize(
    ("text", "verbs"),
    [
        ("a person holds a cup", ["hold"]),
        ("person cups water in their hands", ["cup"]),
        ("person turns on the light", ["turn"]),
        ("person lights a candle", ["light"]),
        ("person takes a drink", ["take"]),
        ("person drinks a drink", ["drink"]),
        ("person takes off their watch and watches tv", ["take", "watch"]),
        ("she puts on a dress and dresses the baby", ["put", "dress"]),
        ("person sat down, took a book, ran out, put it back and ate", ["sit", "take", "run", "put", "eat"]),
        ("the person is putting on shoes", ["put"]),
        ("person has opened the door", ["open"]),
        ("person has a cup", ["have"]),
        ("person does the dishes", ["do"]),
        ("person did not close the door", ["close"]),
        ("person can open the door", ["open"]),
        ("the door is open", []),
        ("a folded towel on the bed", []),
        ("Person [closes] the door", ["close"]),
        ("Person [] the door", []),
        ("", []),
    ],
)
def test_hard_cases(text, verbs):
    assert nlp.verb_lemmas([text]) == [verbs]


def test_spans_point_at_the_verbs():
    text = "Person closes the door and walks out"
    spans = nlp.verb_spans([text])[0]
    assert [(text[s:e], lemma) for s, e, lemma in spans] == [("closes", "close"), ("walks", "walk")]


def test_lemmatize_verb_for_one_word_answers():
    assert [nlp.lemmatize_verb(w) for w in ["Walking", "sat", "took", "closes", "cup"]] == [
        "walk",
        "sit",
        "take",
        "close",
        "cup",
    ]


def test_batched_equals_single_and_is_cached():
    texts = [r["text"] for r in load_set("dev")]
    nlp.clear_cache()
    batched = nlp.verb_lemmas(texts + texts)
    assert nlp.cache_size() == len(set(texts))
    assert batched[: len(texts)] == batched[len(texts) :]
    nlp.clear_cache()
    assert [nlp.verb_lemmas([t])[0] for t in texts] == batched[: len(texts)]


def test_backend_name_and_single_log_line(caplog):
    nlp.set_backend("offline")
    with caplog.at_level(logging.INFO, logger="rewards.nlp"):
        nlp.verb_lemmas(["a person walks"])
        nlp.verb_lemmas(["a person runs"])
    assert sum("NLP backend" in r.getMessage() for r in caplog.records) == 1
    assert nlp.backend_name().startswith("invert4tvg-verbs ")
    info = nlp.backend_info()
    assert info["nlp_backend"] == nlp.backend_name() and info["spacy"] == spacy.__version__


def test_unknown_backend_error_says_what_to_do():
    nlp.set_backend("en_core_web_nonexistent")
    try:
        with pytest.raises(RuntimeError, match=r"en_core_web_nonexistent.*spacy download.*offline"):
            nlp.verb_lemmas(["a person walks"])
    finally:
        nlp.set_backend("offline")


def test_saved_pipeline_loads_by_path_in_a_fresh_process(tmp_path):
    """The factory is found through the spacy_factories entry point, without importing rewards first."""
    script = f"""
import sys, spacy
blank = spacy.blank("en")
blank.add_pipe("invert4tvg_verbs")
blank.meta.update(name="invert4tvg_verbs", version="0.1.0")
blank.to_disk({str(tmp_path)!r})
assert "rewards" in sys.modules  # imported by spaCy through the entry point
nlp = spacy.load({str(tmp_path)!r})
print([t.lemma_ for t in nlp("person took a cup") if t.pos_ == "VERB"])
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "['take']"
    nlp.set_backend(str(tmp_path))
    try:
        assert nlp.verb_lemmas(["person sat down"]) == [["sit"]]
        assert nlp.backend_name() == "en_invert4tvg_verbs 0.1.0"
    finally:
        nlp.set_backend("offline")


@pytest.mark.skipif(
    not spacy.util.is_package("en_core_web_sm"),
    reason="en_core_web_sm is not installed (not on PyPI: python -m spacy download en_core_web_sm)",
)
def test_paper_pipeline_is_preferred_when_installed():
    nlp.set_backend("auto")
    try:
        assert nlp.backend_name().startswith("en_core_web_sm ")
        assert nlp.verb_lemmas(["Person closed the door"]) == [["close"]]
    finally:
        nlp.set_backend("offline")
