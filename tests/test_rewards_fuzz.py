"""Property tests: on arbitrary completions no reward raises, and every score stays in its range."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rewards
from rewards import cosine

FRAGMENTS = [
    "<think>", "</think>", "<answer>", "</answer>", "<answer", "answer>", " to ", " and ", " TO ", "-", ".", " ",
    "\n", "0", "7", "12.5", "99999999999999999999", "1e309", "nan", "inf", "person", "closes", "the door", "walks",
    "[", "]", "[]", "cup", "drinks", "sat", "'s", "n't", "🚪", "é", "\u200b", "\x00", "٣",
]  # fmt: skip
texts = st.one_of(
    st.text(max_size=80),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=25).map("".join),
)
completion = st.one_of(
    texts,
    texts.map(lambda t: [{"role": "assistant", "content": t}]),
    texts.map(lambda t: [{"role": "assistant", "content": [{"type": "text", "text": t}]}]),
)
batches = st.lists(completion, min_size=1, max_size=4)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def columns(n: int, task: str) -> dict:
    return {
        "task": [task] * n,
        "query": ["person closes the door and walks out"] * n,
        "masked_query": ["person [] the door and [] out"] * n,
        "masked_verbs": [["close", "walk"]] * n,
        "start": [2.0] * n,
        "end": [7.5] * n,
        "duration": [30.0] * n,
    }


def in_unit_interval(scores: list, n: int) -> bool:
    return len(scores) == n and all(s is None or (isinstance(s, float) and 0.0 <= s <= 1.0) for s in scores)


@FUZZ
@given(batches)
def test_format_and_iou(batch):
    n = len(batch)
    assert in_unit_interval(rewards.get("format")(batch), n)
    assert in_unit_interval(rewards.get("iou")(batch, **columns(n, "tvg")), n)
    assert in_unit_interval(rewards.build("iou", clip=True)(batch, **columns(n, "tvg")), n)


@FUZZ
@given(batches, st.sampled_from(["vc", "ar", "vd"]))
def test_verb_rewards(batch, task):
    n = len(batch)
    scores = rewards.get(task)(batch, **columns(n, task))
    assert in_unit_interval(scores, n) and None not in scores


@FUZZ
@given(texts, texts)
def test_parse_span_and_iou_helpers(text, gt_text):
    span = rewards.parse_span(text)
    assert span is None or (0.0 <= span[0] <= span[1] < float("inf"))
    other = rewards.parse_span(gt_text, require_answer=False) or (0.0, 1.0)
    assert 0.0 <= rewards.temporal_iou(span or (0.0, 0.0), other) <= 1.0


class HashEmbedder:
    """Deterministic pseudo-random unit vectors, so fuzzing needs no model."""

    name = "hash"

    def embed(self, words):
        rows = [np.random.default_rng(abs(hash(w)) % 2**32).normal(size=8) for w in words]
        return cosine._normalise(np.array(rows))


COSINE = rewards.build("cosine", embedder=HashEmbedder())


@FUZZ
@given(st.lists(st.tuples(completion, st.sampled_from(["tvg", "vc", "ar", "vd"])), min_size=1, max_size=6))
def test_composite_and_cosine_on_mixed_batches(samples):
    batch = [c for c, _ in samples]
    n = len(batch)
    cols = columns(n, "tvg") | {"task": [t for _, t in samples]}
    breakdown = rewards.get("invert4tvg").score(batch, **cols)
    assert all(0.0 <= total <= 2.0 for total in breakdown.total)
    assert all(in_unit_interval(scores, n) for scores in breakdown.components.values())
    assert in_unit_interval(COSINE(batch, **cols), n)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from([*FRAGMENTS, "<think>", "</think>", "<answer>", "</answer>", " ", "\t", "\u3000"]),
        max_size=16,
    ).map("".join)
)
def test_linear_format_check_equals_the_regex(text):
    assert rewards.has_valid_format(text) == (
        rewards.completions.FORMAT_PATTERN.fullmatch(text.strip()) is not None
    )
