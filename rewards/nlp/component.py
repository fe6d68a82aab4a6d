"""The offline pipeline: spaCy's English tokenizer plus the rule-based verb tagger as a pipeline component.

The factory is also declared under the ``spacy_factories`` entry point (pyproject.toml), so a pipeline saved with
``nlp.to_disk`` loads with ``spacy.load(path)`` in any process where this package is installed, without importing
it first (spaCy otherwise fails with E002 on an unknown factory).
"""

from __future__ import annotations

import spacy
from spacy.language import Language
from spacy.tokens import Doc

from rewards.nlp.tagger import tag

FACTORY = "invert4tvg_verbs"
PIPELINE_NAME = "invert4tvg-verbs"
PIPELINE_VERSION = "0.2.0"  # bump when the tagger's decisions change: it is recorded in run metadata


class VerbTagger:
    """Sets ``pos_`` on every token and ``lemma_`` on verbs and auxiliaries. Stateless."""

    def __init__(self, nlp: Language, name: str = FACTORY) -> None:
        self.name = name

    def __call__(self, doc: Doc) -> Doc:
        for token, (pos, lemma) in zip(doc, tag([t.lower_ for t in doc])):
            token.pos_ = pos
            if lemma is not None:
                token.lemma_ = lemma
        return doc


@Language.factory(FACTORY)
def make_verb_tagger(nlp: Language, name: str) -> VerbTagger:
    return VerbTagger(nlp, name)


def offline_pipeline() -> Language:
    """``spacy.blank("en")`` + the verb tagger, with a name and version in ``nlp.meta``."""
    nlp = spacy.blank("en")
    nlp.add_pipe(FACTORY)
    nlp.meta["name"] = PIPELINE_NAME.replace("-", "_")
    nlp.meta["version"] = PIPELINE_VERSION
    nlp.meta["description"] = (
        "spaCy English tokenizer + invert4tvg rule-based verb tagger (lemminflect lemmas)"
    )
    return nlp
