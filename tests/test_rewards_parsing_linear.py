"""Answer parsing is linear in the completion's length (issue 10, item 10): a 1 MB adversarial completion is parsed
in under 0.1 s by the parser and by every reward that reads the answer block, with the regex's exact results."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

import rewards
from rewards import nlp
from rewards.completions import ANSWER_PATTERN, answer_text, first_answer_text

MB = 1 << 20
BOUND_S = 0.1  # the bound issue 10 asks for; generous for str.find (about 1e-4 s measured at 1 MB)


def adversarial(shape: str) -> str:
    """1 MB texts that make ``<answer>(.*?)</answer>`` rescan the text from every opening tag."""
    if shape == "close_then_opens":  # the issue's case
        return "</answer>" + "<answer>" * (MB // 8)
    if shape == "opens_then_close":
        return "<answer>" * (MB // 8) + "</answer>"
    if shape == "opens_then_text":
        return "<answer>" * (MB // 16) + "0 to 1 " * (MB // 14)
    if shape == "digits_in_answer":  # a number pattern that backtracked from every digit would be quadratic
        return "<answer>" + "1" * (MB // 2) + " to " + "2." * (MB // 4) + "</answer>"
    if shape == "think_answer_pairs":
        return "<think>" + "</think><answer>" * (MB // 16)
    raise ValueError(shape)


SHAPES = ("close_then_opens", "opens_then_close", "opens_then_text", "digits_in_answer", "think_answer_pairs")


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


@pytest.mark.parametrize("shape", SHAPES)
def test_one_megabyte_parses_under_the_bound(shape):
    text = adversarial(shape)
    assert len(text) >= MB - 16
    for fn in (answer_text, first_answer_text, rewards.has_valid_format):
        _, seconds = timed(fn, text)
        assert seconds < BOUND_S, f"{fn.__name__} took {seconds:.3f} s on 1 MB ({shape})"
    # parse_span also runs the span pattern over the block's content, one linear regex pass (about 40 ms over a
    # 1 MB block on an idle core, so 0.1 s would be flaky on a loaded machine); a quadratic scan would take minutes.
    bound = BOUND_S if shape in ("close_then_opens", "think_answer_pairs") else 1.0
    _, seconds = timed(rewards.parse_span, text)
    assert seconds < bound, f"parse_span took {seconds:.3f} s on 1 MB ({shape})"


class ZeroEmbedder:
    name = "zeros"

    def embed(self, words):
        return np.zeros((len(words), 2), dtype=np.float32)


@pytest.mark.parametrize(
    ("reward", "options", "columns"),
    [
        ("format", {}, {}),
        ("iou", {}, {"start": [1.0], "end": [2.0]}),
        ("vc", {}, {"masked_verbs": [["close"]]}),
        ("ar", {}, {"query": ["person closes the door"]}),
        ("vd", {}, {"query": ["person closes the door"]}),
        ("cosine", {"embedder": ZeroEmbedder()}, {"task": ["ar"], "query": ["person closes the door"]}),
        ("invert4tvg", {}, {"task": ["tvg"], "start": [1.0], "end": [2.0]}),
    ],
)
def test_every_reward_scores_the_issue_case_at_one_megabyte_under_the_bound(reward, options, columns):
    nlp.set_backend("offline")
    try:
        fn = rewards.build(reward, **options)
        fn(["<think>warm</think><answer>person closes the door</answer>"], **columns)  # load the NLP pipeline
        scores, seconds = timed(fn, [adversarial("close_then_opens")], **columns)
    finally:
        nlp.set_backend(None)
    assert scores == [0.0]
    assert seconds < BOUND_S, f"{reward} took {seconds:.3f} s on 1 MB"


def test_same_blocks_as_the_regex():
    """The scan returns what ``findall(...)[-1]`` / ``search`` return, on random tag soup."""
    rng = random.Random(0)
    pieces = ["<answer>", "</answer>", "<think>", "</think>", "a", "1 to 2", " ", "\n", "<answer", "answer>"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        blocks = ANSWER_PATTERN.findall(text)
        first = ANSWER_PATTERN.search(text)
        assert answer_text(text) == (blocks[-1] if blocks else None), text
        assert first_answer_text(text) == (first.group(1) if first else None), text
