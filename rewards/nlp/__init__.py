"""Verbs and their lemmas for the inversion-task rewards, from one process-wide spaCy pipeline.

Backend choice (environment variable ``INVERT4TVG_NLP``, or :func:`set_backend`):

- ``auto`` (default): ``en_core_web_sm`` when it is installed (the paper's pipeline), else the offline pipeline.
- ``offline``: spaCy's English tokenizer + this package's rule-based verb tagger (``component.py``).
- anything else: a spaCy package name or a path for ``spacy.load``.

Whatever the backend, a verb is a token with ``pos_ == "VERB"`` (auxiliaries are ``AUX``), reduced to its
lower-cased ``lemma_``. Results are cached by text: a group of G generations shares one query, and the same queries
come back every epoch.

*Action* verbs (:func:`action_verb_lemmas`) are the verbs minus aspectual ones ("begin", "start", "try", ...) that
another verb follows ("begins sneezing", "starts to laugh"): the inversion tasks mask and ask for actions. The list
is process-wide like the backend (:func:`set_aspectual_verbs`), so that the VC mask and the rewards agree.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import lemminflect
import spacy
from spacy.language import Language

from rewards.nlp.component import PIPELINE_NAME, PIPELINE_VERSION, offline_pipeline
from rewards.nlp.lexicon import ADVERBS, ASPECTUAL_VERBS

__all__ = [
    "ASPECTUAL_VERBS",
    "ENV_VAR",
    "action_verb_lemmas",
    "action_verb_spans",
    "aspectual_verbs",
    "backend_info",
    "backend_name",
    "clear_cache",
    "get_nlp",
    "lemmatize_verb",
    "set_aspectual_verbs",
    "set_backend",
    "verb_lemmas",
    "verb_spans",
]

ENV_VAR = "INVERT4TVG_NLP"
PAPER_PIPELINE = "en_core_web_sm"
CACHE_SIZE = 200_000
# Longer texts are analysed up to this many characters: spaCy refuses texts over nlp.max_length (1M), and a
# completion this long is degenerate anyway (a reward must not raise on it).
MAX_CHARS = 20_000
# Components en_core_web_sm does not need for POS tags and lemmas; excluding them triples its speed.
_UNUSED_COMPONENTS = ("parser", "ner", "senter")

logger = logging.getLogger(__name__)

VerbSpan = tuple[int, int, str]  # (start_char, end_char, lemma)

_lock = threading.Lock()
_nlp: Language | None = None
_backend_name: str | None = None
_requested: str | None = None  # set_backend() overrides the environment
_cache: dict[str, tuple[VerbSpan, ...]] = {}
_aspectual: frozenset[str] = ASPECTUAL_VERBS
# Words that may stand between an aspectual verb and the action it frames: "starts to laugh", "keeps on walking".
_ASPECT_GAP = frozenset({"to", "on"}) | ADVERBS


def set_backend(name: str | None) -> None:
    """Choose the backend ("auto", "offline", a spaCy package or path); ``None`` returns to the environment."""
    global _nlp, _backend_name, _requested
    with _lock:
        _requested = name
        _nlp = None
        _backend_name = None
        _cache.clear()


def _load(choice: str) -> tuple[Language, str]:
    if choice == "auto":
        choice = PAPER_PIPELINE if spacy.util.is_package(PAPER_PIPELINE) else "offline"
    if choice == "offline":
        nlp = offline_pipeline()
        return nlp, f"{PIPELINE_NAME} {PIPELINE_VERSION}"
    try:
        nlp = spacy.load(choice, exclude=list(_UNUSED_COMPONENTS))
    except OSError as err:
        raise RuntimeError(
            f"NLP backend {choice!r} could not be loaded ({ENV_VAR}={choice!r}). Install it "
            f"(python -m spacy download {choice}) or use {ENV_VAR}=offline."
        ) from err
    meta = nlp.meta
    return nlp, f"{meta.get('lang', 'xx')}_{meta.get('name', choice)} {meta.get('version', '?')}"


def get_nlp() -> Language:
    """The active pipeline (loaded on first use; the choice is logged once)."""
    global _nlp, _backend_name
    if _nlp is None:
        with _lock:
            if _nlp is None:
                choice = _requested or os.environ.get(ENV_VAR, "auto") or "auto"
                nlp, name = _load(choice)
                _backend_name = name
                _nlp = nlp
                logger.info("invert4tvg rewards: NLP backend %s (requested %r)", name, choice)
    return _nlp


def backend_name() -> str:
    """E.g. ``"en_core_web_sm 3.8.0"`` or ``"invert4tvg-verbs 0.2.0"``; for run metadata."""
    get_nlp()
    assert _backend_name is not None
    return _backend_name


def backend_info() -> dict[str, Any]:
    """Backend name plus the library versions that determine its output (for run metadata)."""
    return {
        "nlp_backend": backend_name(),
        "aspectual_verbs": sorted(_aspectual),
        "pipeline": get_nlp().pipe_names,
        "spacy": spacy.__version__,
        "lemminflect": getattr(lemminflect, "__version__", "unknown"),
    }


def _analyse(doc: Any) -> tuple[VerbSpan, ...]:
    return tuple((t.idx, t.idx + len(t.text), t.lemma_.lower()) for t in doc if t.pos_ == "VERB")


_NON_SPACE = re.compile(r"\S+")


class _Normalised:
    """``text`` with every whitespace run made one space (and none at the ends), mapping offsets back.

    Backends differ on runs of spaces, tabs and newlines (spaCy makes a token of them, which a tagger may read as a
    sentence break), so every backend sees the same single-spaced text; spans still point into the original.
    """

    def __init__(self, text: str) -> None:
        words = [(m.start(), m.group()) for m in _NON_SPACE.finditer(text)]
        self.text = " ".join(w for _, w in words)
        self._norm_starts, self._orig_starts = [], []
        pos = 0
        for orig, word in words:
            self._norm_starts.append(pos)
            self._orig_starts.append(orig)
            pos += len(word) + 1

    def original(self, start: int, end: int) -> tuple[int, int]:
        k = bisect.bisect_right(self._norm_starts, start) - 1
        shift = self._orig_starts[k] - self._norm_starts[k]
        j = bisect.bisect_right(self._norm_starts, end - 1) - 1
        return start + shift, end + self._orig_starts[j] - self._norm_starts[j]


def verb_spans(texts: Sequence[str]) -> list[tuple[VerbSpan, ...]]:
    """Per text, its main verbs as ``(start_char, end_char, lemma)``; batched through ``nlp.pipe`` and cached.

    Whitespace is normalised before the backend sees the text (see ``_Normalised``); offsets refer to ``text``.
    """
    missing = list(dict.fromkeys(t for t in texts if t not in _cache))
    if missing:
        nlp = get_nlp()
        if len(_cache) + len(missing) > CACHE_SIZE:
            _cache.clear()  # coarse eviction: cheaper than LRU bookkeeping on every hit
        normalised = [_Normalised(t[:MAX_CHARS]) for t in missing]
        for text, norm, doc in zip(
            missing, normalised, nlp.pipe((n.text for n in normalised), batch_size=256)
        ):
            _cache[text] = tuple((*norm.original(s, e), lemma) for s, e, lemma in _analyse(doc))
    return [_cache[t] for t in texts]


def verb_lemmas(texts: Sequence[str]) -> list[list[str]]:
    """Per text, the lemmas of its main verbs in order of appearance (duplicates kept)."""
    return [[lemma for _, _, lemma in spans] for spans in verb_spans(texts)]


def set_aspectual_verbs(lemmas: Iterable[str] | None) -> None:
    """The verb lemmas that :func:`action_verb_spans` leaves out before another verb; ``None``: the default list
    (``ASPECTUAL_VERBS``), an empty list: keep every verb (the behaviour of the public code)."""
    global _aspectual
    _aspectual = (
        ASPECTUAL_VERBS if lemmas is None else frozenset(w.strip().lower() for w in lemmas if w.strip())
    )


def aspectual_verbs() -> frozenset[str]:
    """The aspectual verb lemmas in effect (see :func:`set_aspectual_verbs`)."""
    return _aspectual


def action_verb_spans(texts: Sequence[str]) -> list[tuple[VerbSpan, ...]]:
    """:func:`verb_spans` without aspectual verbs that frame a following verb.

    "person begins sneezing" -> only "sneezing"; "person starts the car and drives" keeps "starts" (its object
    comes between). Only "to", "on" and adverbs may separate the aspectual verb from the next one.
    """
    out = []
    for text, spans in zip(texts, verb_spans(texts)):
        kept = []
        for k, (start, end, lemma) in enumerate(spans):
            if lemma in _aspectual and k + 1 < len(spans):
                gap = text[end : spans[k + 1][0]].lower().split()
                if all(word in _ASPECT_GAP for word in gap):
                    continue
            kept.append((start, end, lemma))
        out.append(tuple(kept))
    return out


def action_verb_lemmas(texts: Sequence[str]) -> list[list[str]]:
    """Per text, the lemmas of :func:`action_verb_spans`, in order (duplicates kept)."""
    return [[lemma for _, _, lemma in spans] for spans in action_verb_spans(texts)]


def lemmatize_verb(word: str) -> str:
    """The lemma of ``word`` read as a verb, whatever its context ("Walking." -> "walk", "sat" -> "sit").

    For one-word answers, which a statistical tagger may read as a noun ("walk").
    """
    word = word.strip().lower()
    spans = verb_spans([word])[0]
    if spans:
        return spans[0][2]
    lemmas = lemminflect.getLemma(word, upos="VERB", lemmatize_oov=True)
    return lemmas[0] if lemmas else word


def clear_cache() -> None:
    """Empty the text cache (benchmarks measure cold and warm runs)."""
    _cache.clear()


def cache_size() -> int:
    return len(_cache)
