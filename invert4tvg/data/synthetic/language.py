"""Query sentences for the synthetic benchmark: several phrasings per action, inflected verbs, two-verb queries.

Verbs come in the third person (``grows``), the progressive (``is growing``) and, less often, the past tense
(``grew``, ``rose``, ``shook``, ``left``), so that verb lemmatization in the inversion tasks is exercised.
:func:`vocabulary` lists every phrase the generator can emit; the tiny model's tokenizer is trained on it.
"""

from __future__ import annotations

import numpy as np

from invert4tvg.data.synthetic.synth_config import COLOURS, SHAPES

# action -> (present-tense predicates, past-tense predicates). The first present entry is the canonical one.
PHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "grow": (
        ("grows", "grows bigger", "gets bigger", "expands", "is growing", "is getting bigger"),
        ("grew", "grew bigger", "expanded"),
    ),
    "shrink": (
        ("shrinks", "gets smaller", "shrinks down", "contracts", "is shrinking", "is getting smaller"),
        ("shrank", "got smaller", "contracted"),
    ),
    "appear": (
        ("appears", "fades in", "shows up", "is appearing", "is fading in"),
        ("appeared", "faded in", "showed up"),
    ),
    "disappear": (
        ("disappears", "fades out", "vanishes", "is disappearing", "is fading out"),
        ("disappeared", "faded out", "vanished"),
    ),
    "enter": (
        ("enters", "enters the scene", "comes into view", "is entering the frame", "enters the frame"),
        ("entered", "entered the scene", "came into view"),
    ),
    "leave": (
        (
            "leaves",
            "leaves the scene",
            "exits",
            "exits the frame",
            "is leaving the frame",
            "goes out of view",
        ),
        ("left the scene", "exited", "went out of view"),
    ),
    "move_left": (
        ("moves to the left", "moves left", "slides to the left", "is moving to the left", "travels left"),
        ("moved to the left", "slid to the left"),
    ),
    "move_right": (
        (
            "moves to the right",
            "moves right",
            "slides to the right",
            "is moving to the right",
            "travels right",
        ),
        ("moved to the right", "slid to the right"),
    ),
    "rise": (
        ("rises", "moves up", "goes up", "floats upward", "is rising", "is moving up"),
        ("rose", "moved up", "went up"),
    ),
    "fall": (
        ("falls", "moves down", "drops", "sinks", "is falling", "is moving down"),
        ("fell", "dropped", "sank"),
    ),
    "open": (
        ("opens", "opens up", "opens its mouth", "is opening"),
        ("opened", "opened up"),
    ),
    "close": (
        ("closes", "shuts", "closes its mouth", "is closing"),
        ("closed", "shut its mouth"),
    ),
    "spin": (
        ("spins", "rotates", "turns around", "is spinning", "is rotating"),
        ("spun", "rotated", "turned around"),
    ),
    "bounce": (
        ("bounces", "jumps up and down", "hops", "is bouncing", "is jumping"),
        ("bounced", "jumped up and down", "hopped"),
    ),
    "shake": (
        ("shakes", "wiggles", "trembles", "is shaking", "is wiggling"),
        ("shook", "wiggled", "trembled"),
    ),
    "blink": (
        ("blinks", "flickers", "flashes on and off", "is blinking", "is flickering"),
        ("blinked", "flickered"),
    ),
    "pulse": (
        ("pulses", "pulsates", "throbs", "is pulsing", "is throbbing"),
        ("pulsed", "throbbed"),
    ),
}

# One verb per action, and nothing else in the predicate: the ``one_lemma`` wording (the ``lookalike`` preset).
# The horizontal pair has no everyday verbs of its own, so it borrows "advance" (to the right, the reading
# direction) and "retreat" (to the left).
ONE_LEMMA: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "grow": (("grows", "is growing"), ("grew",)),
    "shrink": (("shrinks", "is shrinking"), ("shrank",)),
    "appear": (("appears", "is appearing"), ("appeared",)),
    "disappear": (("disappears", "is disappearing"), ("disappeared",)),
    "enter": (("enters", "is entering"), ("entered",)),
    "leave": (("leaves", "is leaving"), ("left",)),
    "move_left": (("retreats", "is retreating"), ("retreated",)),
    "move_right": (("advances", "is advancing"), ("advanced",)),
    "rise": (("rises", "is rising"), ("rose",)),
    "fall": (("falls", "is falling"), ("fell",)),
    "open": (("opens", "is opening"), ("opened",)),
    "close": (("closes", "is closing"), ("closed",)),
}
WORDINGS = {"varied": PHRASES, "one_lemma": ONE_LEMMA}

ARTICLES = ("the", "a")
CONNECTORS = ("{a} and then {b}", "{a}, then {b}", "{a} and afterwards {b}", "{a} before it {b}")


def describe(colour: str, shape: str, rng: np.random.Generator) -> str:
    return f"{ARTICLES[int(rng.integers(len(ARTICLES)))]} {colour} {shape}"


def predicate(
    action: str, rng: np.random.Generator, past_tense_prob: float, wording: str = "varied"
) -> tuple[str, bool]:
    """A phrasing of ``action`` and whether it is in the past tense."""
    present, past = WORDINGS[wording][action]
    past_tense = bool(rng.random() < past_tense_prob)
    options = past if past_tense else present
    return options[int(rng.integers(len(options)))], past_tense


def _finish(text: str, rng: np.random.Generator) -> str:
    # Mixed capitalisation and punctuation, as in human-written grounding queries.
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    return text + "." if rng.random() < 0.7 else text


def single_query(
    colour: str,
    shape: str,
    action: str,
    rng: np.random.Generator,
    past_tense_prob: float,
    wording: str = "varied",
) -> str:
    pred, _ = predicate(action, rng, past_tense_prob, wording)
    return _finish(f"{describe(colour, shape, rng)} {pred}", rng)


def two_verb_query(
    colour: str,
    shape: str,
    first: str,
    second: str,
    rng: np.random.Generator,
    past_tense_prob: float,
    wording: str = "varied",
) -> str:
    past = bool(rng.random() < past_tense_prob)
    # Both verbs share a tense; the progressive reads badly after "then", so only simple forms are used here.
    a = _simple(first, past, rng, wording)
    b = _simple(second, past, rng, wording)
    connector = CONNECTORS[int(rng.integers(len(CONNECTORS)))]
    return _finish(f"{describe(colour, shape, rng)} " + connector.format(a=a, b=b), rng)


def activity_query(colour: str, shape: str, rng: np.random.Generator) -> str:
    """The benchmark's other temporal question: when does the object do anything at all (first action's start to
    last action's end). A warm start trained on it learns objects, the clock and the answer format, not which
    action a query names."""
    return _finish(f"{describe(colour, shape, rng)} changes", rng)


ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")


def ordinal_query(colour: str, shape: str, k: int, rng: np.random.Generator) -> str:
    """A third temporal question: when does the object change for the k-th time (0-based ``k``). A warm start
    trained on it learns to find one action's boundaries without being told which action, so RL can learn which
    action a benchmark query names from the IoU reward."""
    return _finish(f"{describe(colour, shape, rng)} changes for the {ORDINALS[k]} time", rng)


def _simple(action: str, past: bool, rng: np.random.Generator, wording: str = "varied") -> str:
    present, past_forms = WORDINGS[wording][action]
    options = past_forms if past else tuple(p for p in present if not p.startswith("is "))
    return options[int(rng.integers(len(options)))]


def vocabulary() -> list[str]:
    """Every phrase the generator can emit: object descriptions, every predicate, connectors, and one full
    sentence per (colour, shape, predicate) so word order and punctuation are covered."""
    texts: list[str] = []
    texts += [f"{art} {c} {s}" for art in ARTICLES for c in COLOURS for s in SHAPES]
    texts += [f"{art.capitalize()} {c} {s}" for art in ARTICLES for c in COLOURS for s in SHAPES]
    predicates = [
        p for table in WORDINGS.values() for present, past in table.values() for p in (*present, *past)
    ]
    texts += predicates
    for c in COLOURS:
        for s in SHAPES:
            texts += [f"the {c} {s} {p}." for p in predicates]
    texts += [f"the {c} {s} changes." for c in COLOURS for s in SHAPES]
    for connector in CONNECTORS:
        texts.append(connector.format(a="grows", b="spins"))
    return texts
