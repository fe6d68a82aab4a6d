"""The cosine-similarity ablation reward: the scoring rule with known vectors, then a real embedding model."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

import rewards
from rewards import cosine


class TableEmbedder:
    """Fixed 2-d vectors, so every expected score can be computed by hand."""

    name = "table"
    vectors: ClassVar[dict[str, list[float]]] = {
        "run": [1.0, 0.0],
        "jog": [0.8, 0.6],
        "eat": [0.0, 1.0],
        "walk": [0.6, 0.8],
        "fly": [-1.0, 0.0],
    }

    def embed(self, words):
        return cosine._normalise(np.array([self.vectors.get(w, [0.0, 0.0]) for w in words]))


def score(task, answers, query="a person runs", masked_verbs=None):
    reward = rewards.build("cosine", embedder=TableEmbedder())
    n = len(answers)
    columns = {"task": [task] * n, "query": [query] * n}
    if masked_verbs is not None:
        columns["masked_verbs"] = [masked_verbs] * n
    return reward([f"<think>t</think><answer>{a}</answer>" for a in answers], **columns)


def test_scores_with_known_vectors():
    assert score("ar", ["run", "jog", "eat", "fly", "door"]) == pytest.approx([1.0, 0.8, 0.0, 0.0, 0.0])
    # VD: mean over query verbs of the best match; "runs and eats" vs a description with "jogs" only.
    assert score("vd", ["A person jogs."], query="a person runs and eats") == pytest.approx([(0.8 + 0.6) / 2])
    assert score("vc", ["person [walks]"], masked_verbs=["run"]) == pytest.approx([0.6])
    assert score("vd", ["no verbs here", ""]) == [0.0, 0.0]
    assert rewards.build("cosine", embedder=TableEmbedder())(["x"], task=["tvg"], query=["q"]) == [None]


def test_needs_task_column():
    with pytest.raises(rewards.MissingColumnError, match=r"'cosine'.*'task'"):
        rewards.build("cosine", embedder=TableEmbedder())(["x"], query=["a person runs"])


def test_no_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cosine.spacy.util, "is_package", lambda name: False)
    monkeypatch.setattr(cosine.importlib.util, "find_spec", lambda name: None)
    assert "no word-embedding backend" in cosine.unavailable_reason()
    with pytest.raises(cosine.EmbeddingsUnavailable, match="spacy download en_core_web_md"):
        rewards.build("cosine")([""], task=["ar"], query=["a person runs"])


REASON = cosine.unavailable_reason()


@pytest.fixture(scope="module")
def real_cosine():
    if REASON is not None:
        pytest.skip(REASON)
    return rewards.build("cosine")


def test_real_embeddings(real_cosine):
    def ar(verb, query="a person runs"):
        return real_cosine([f"<answer>{verb}</answer>"], task=["ar"], query=[query])[0]

    assert ar("running") == pytest.approx(1.0, abs=1e-5)  # same lemma, same vector
    assert ar("jog") > ar("eat") > 0.0  # a related verb beats an unrelated one
    assert 0.0 <= ar("photosynthesize") < 1.0
    assert real_cosine.embedder.inner.name  # recorded in run metadata by the trainer
