"""Every query the synthetic benchmark can write has a verb the NLP backend finds, so VC / AR / VD samples can be
built from all of them (a verbless query silently falls back to grounding)."""

from __future__ import annotations

from invert4tvg.data.synthetic import PHRASES, SHAPES
from rewards.nlp import verb_lemmas


def test_every_phrasing_has_a_verb():
    queries = [
        f"{det} {colour} {shape} {phrase}{end}"
        for phrases in PHRASES.values()
        for phrase in phrases[0] + phrases[1]
        for shape in SHAPES
        for det, colour, end in (("the", "red", "."), ("a", "blue", ""))
    ]
    missing = [q for q, lemmas in zip(queries, verb_lemmas(queries)) if not lemmas]
    assert not missing, f"{len(missing)} synthetic queries without a verb, e.g. {missing[:5]}"
