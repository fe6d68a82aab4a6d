"""Verbs and their lemmas for the inversion-task rewards, from one process-wide spaCy pipeline.

Backend choice (environment variable ``INVERT4TVG_NLP``, or :func:`set_backend`):

- ``auto`` (default): ``en_core_web_sm`` when it is installed (the paper's pipeline), else the offline pipeline.
- ``offline``: spaCy's English tokenizer + this package's rule-based verb tagger (``component.py``).
- anything else: a spaCy package name or a path for ``spacy.load``.

Whatever the backend, a verb is a token with ``pos_ == "VERB"`` (auxiliaries are ``AUX``), reduced to its
lower-cased ``lemma_``. Results are cached by text: a group of G generations shares one query, and the same queries
come back every epoch.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import lemminflect
import spacy
from spacy.language import Language

from rewards.nlp.component import PIPELINE_NAME, PIPELINE_VERSION, offline_pipeline

__all__ = [
    "ENV_VAR",
    "backend_info",
    "backend_name",
    "clear_cache",
    "get_nlp",
    "lemmatize_verb",
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
    """E.g. ``"en_core_web_sm 3.8.0"`` or ``"invert4tvg-verbs 0.1.0"``; for run metadata."""
    get_nlp()
    assert _backend_name is not None
    return _backend_name


def backend_info() -> dict[str, Any]:
    """Backend name plus the library versions that determine its output (for run metadata)."""
    return {
        "nlp_backend": backend_name(),
        "pipeline": get_nlp().pipe_names,
        "spacy": spacy.__version__,
        "lemminflect": getattr(lemminflect, "__version__", "unknown"),
    }


def _analyse(doc: Any) -> tuple[VerbSpan, ...]:
    return tuple((t.idx, t.idx + len(t.text), t.lemma_.lower()) for t in doc if t.pos_ == "VERB")


def verb_spans(texts: Sequence[str]) -> list[tuple[VerbSpan, ...]]:
    """Per text, its main verbs as ``(start_char, end_char, lemma)``; batched through ``nlp.pipe`` and cached."""
    missing = list(dict.fromkeys(t for t in texts if t not in _cache))
    if missing:
        nlp = get_nlp()
        if len(_cache) + len(missing) > CACHE_SIZE:
            _cache.clear()  # coarse eviction: cheaper than LRU bookkeeping on every hit
        for text, doc in zip(missing, nlp.pipe((t[:MAX_CHARS] for t in missing), batch_size=256)):
            _cache[text] = _analyse(doc)
    return [_cache[t] for t in texts]


def verb_lemmas(texts: Sequence[str]) -> list[list[str]]:
    """Per text, the lemmas of its main verbs in order of appearance (duplicates kept)."""
    return [[lemma for _, _, lemma in spans] for spans in verb_spans(texts)]


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
