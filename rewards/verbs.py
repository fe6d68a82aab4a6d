"""Rewards of the three inversion tasks (seed paper eqs. 5-7): verb completion, action recognition, description.

All compare verb *lemmas* (so "closes", "closed" and "closing" all match "close"), read with the NLP backend of
``rewards.nlp``. Only action verbs count: an aspectual verb before another verb ("begins sneezing") is neither a
target nor an answer verb (``rewards.nlp.action_verb_lemmas``; ``set_aspectual_verbs([])`` counts every verb).
The answer is the content of the last ``<answer>`` block; no block scores 0. A one-word answer ("Walk.",
"[closes]") is lemmatized as a verb whatever the tagger would make of a lone word.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rewards import nlp
from rewards.base import Columns, Reward
from rewards.completions import answer_text
from rewards.errors import ColumnValueError, MissingColumnError
from rewards.registry import register

_ONE_WORD = re.compile(r"^[\W_]*([^\W\d_]+)[\W_]*$")


@dataclass
class Prepared:
    """Verb lemmas per sample, computed for the whole batch in one ``nlp.pipe`` call."""

    answer_verbs: dict[int, list[str] | None]  # None: no answer block
    reference: dict[int, Any]  # the texts or lemmas the reward compares against


def answer_verbs(answers: Sequence[str]) -> list[list[str]]:
    """Verb lemmas of each answer; a one-word answer is read as a verb (its lemma first)."""
    found = nlp.action_verb_lemmas(answers)
    out = []
    for answer, lemmas in zip(answers, found):
        match = _ONE_WORD.match(answer)
        if match:
            forced = nlp.lemmatize_verb(match.group(1))
            if forced not in lemmas:
                lemmas = [forced, *lemmas]
        out.append(lemmas)
    return out


def masked_references(reward: str, indices: list[int], cols: Columns) -> dict[int, Any]:
    """The masked verbs per sample: the ``masked_verbs`` column, else derived from query and masked query."""
    out: dict[int, Any] = {}
    if cols.has("masked_verbs"):
        for i in indices:
            try:
                out[i] = _lemma_list(cols.value("masked_verbs", i), "masked_verbs")
            except ColumnValueError as err:
                out[i] = err
        return out
    if not (cols.has("query") and cols.has("masked_query")):
        missing = "query" if not cols.has("query") else "masked_query"
        raise MissingColumnError(reward, f"masked_verbs (or query and masked_query; {missing} is missing)")
    queries = _texts(indices, cols, "query", out)
    masked = _texts(list(queries), cols, "masked_query", out)
    full = nlp.action_verb_lemmas([queries[i] for i in masked])
    kept = nlp.action_verb_lemmas(list(masked.values()))
    for i, f, k in zip(masked, full, kept):
        out[i] = list((Counter(f) - Counter(k)).elements())
    return out


def _texts(indices: list[int], cols: Columns, column: str, errors: dict[int, Any]) -> dict[int, str]:
    """``column``'s string per sample; a bad value goes into ``errors`` instead."""
    texts = {}
    for i in indices:
        try:
            texts[i] = cols.text(column, i)
        except ColumnValueError as err:
            errors[i] = err
    return texts


def _lemma_list(value: Any, column: str) -> list[str]:
    if isinstance(value, str):
        items = re.split(r"[\s,]+", value)
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ColumnValueError(column, f"expected a list of verb lemmas, got {type(value).__name__}")
    if not all(isinstance(v, str) for v in items):
        raise ColumnValueError(column, "verb lemmas must be strings")
    return [v.strip().lower() for v in items if v.strip()]


class VerbReward(Reward):
    """Shared batching: all answers and all reference texts go through the NLP backend together."""

    def prepare(self, texts: dict[int, str], cols: Columns) -> Prepared:
        answers = {i: answer_text(t) for i, t in texts.items()}
        with_answer = [i for i, a in answers.items() if a is not None]
        reference = self.references(list(texts), cols)
        lemmas = answer_verbs([answers[i] for i in with_answer])  # type: ignore[misc]
        verbs: dict[int, list[str] | None] = dict.fromkeys(texts)
        verbs.update(zip(with_answer, lemmas))
        return Prepared(verbs, reference)

    def references(self, indices: list[int], cols: Columns) -> dict[int, Any]:
        """The query's verb lemmas per sample (AR, VD); VC overrides this with the masked verbs.

        A bad value is stored as its exception and raised by ``score_one``, so that the error policy sees it
        with the sample's index.
        """
        out: dict[int, Any] = {}
        queries = _texts(indices, cols, "query", out)
        out.update(zip(queries, nlp.action_verb_lemmas(list(queries.values()))))
        return out

    @staticmethod
    def reference(prepared: Prepared, i: int) -> list[str]:
        value = prepared.reference[i]
        if isinstance(value, Exception):
            raise value
        return value

    @classmethod
    def query_verbs(cls, prepared: Prepared, i: int) -> list[str]:
        verbs = cls.reference(prepared, i)
        if not verbs:
            raise ColumnValueError("query", "the query has no verb, so this inversion task cannot be scored")
        return verbs


@register("vc")
class VerbCompletionReward(VerbReward):
    """1 when every masked verb of the query appears, as a lemma, among the answer's verbs (eq. 5).

    Ground truth: the ``masked_verbs`` column (lemmas), or else the verbs of ``query`` missing from
    ``masked_query``. The paper's example: "Person [closes] the door" for "Person [] the door" earns 1.
    """

    name = "vc"
    tasks = frozenset({"vc"})

    def references(self, indices: list[int], cols: Columns) -> dict[int, Any]:
        return masked_references(self.name, indices, cols)

    def score_one(self, i: int, text: str, cols: Columns, prepared: Prepared) -> float:
        target = self.reference(prepared, i)
        if not target:
            column = "masked_verbs" if cols.has("masked_verbs") else "masked_query"
            raise ColumnValueError(column, "no verb is masked, so verb completion cannot be scored")
        predicted = prepared.answer_verbs[i]
        if predicted is None:
            return 0.0
        return 1.0 if set(target) <= set(predicted) else 0.0


@register("ar")
class ActionRecognitionReward(VerbReward):
    """1 when the answer's verb (its first verb, if it has several words) is a verb of the query (eq. 6)."""

    name = "ar"
    tasks = frozenset({"ar"})
    columns = ("query",)

    def score_one(self, i: int, text: str, cols: Columns, prepared: Prepared) -> float:
        target = self.query_verbs(prepared, i)
        predicted = prepared.answer_verbs[i]
        if not predicted:
            return 0.0
        return 1.0 if predicted[0] in target else 0.0


@register("vd")
class VideoDescriptionReward(VerbReward):
    """1 when every verb of the query appears, as a lemma, among the verbs of the answer's description (eq. 7)."""

    name = "vd"
    tasks = frozenset({"vd"})
    columns = ("query",)

    def score_one(self, i: int, text: str, cols: Columns, prepared: Prepared) -> float:
        target = self.query_verbs(prepared, i)
        predicted = prepared.answer_verbs[i]
        if predicted is None:
            return 0.0
        return 1.0 if set(target) <= set(predicted) else 0.0
