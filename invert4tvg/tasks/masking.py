"""Verb masking for verb completion: "person closes the door and walks out" -> "person [] the door and [] out"."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rewards import nlp

MASK = "[]"
MASK_MODES = ("all", "one")


class TaskUnavailable(ValueError):
    """A record cannot make an instance of the requested task (the sampler falls back to "tvg")."""


class NoVerbError(TaskUnavailable):
    """The query has no main verb, so it cannot make a VC, AR or VD sample."""


@dataclass(frozen=True)
class MaskedQuery:
    text: str  # the query with the masked verbs replaced by MASK
    verbs: tuple[str, ...]  # lemmas of the masked verbs, in order


def mask_query(query: str, mode: str = "all", rng: np.random.Generator | None = None) -> MaskedQuery:
    """Mask every action verb of ``query`` (``mode="all"``, the default) or one verb drawn with ``rng``.

    Aspectual verbs that frame another verb stay: "person begins sneezing" -> "person begins []", not
    "person [] []" (see ``rewards.nlp.action_verb_spans`` and ``TaskArguments.aspectual_verbs``).

    Without ``rng``, ``"one"`` draws from a generator seeded by the query text, so the choice is reproducible.
    Raises :class:`NoVerbError` when the query has no main verb.
    """
    if mode not in MASK_MODES:
        raise ValueError(f"mask mode must be one of {MASK_MODES}, got {mode!r}")
    spans = nlp.action_verb_spans([query])[0]
    if not spans:
        raise NoVerbError(f"query has no verb to mask: {query!r}")
    if mode == "one":
        rng = rng if rng is not None else np.random.default_rng(zlib.crc32(query.encode("utf-8")))
        spans = (spans[int(rng.integers(len(spans)))],)
    return MaskedQuery(_replace(query, [(s, e) for s, e, _ in spans]), tuple(lemma for _, _, lemma in spans))


def _replace(text: str, spans: Sequence[tuple[int, int]]) -> str:
    out, cursor = [], 0
    for start, end in spans:
        out.append(text[cursor:start])
        out.append(MASK)
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


def warm(queries: Sequence[str]) -> None:
    """Tag many queries in one batched pass, so that later per-record calls hit the cache."""
    nlp.verb_spans(list(dict.fromkeys(queries)))
