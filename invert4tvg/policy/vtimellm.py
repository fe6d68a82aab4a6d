"""VTimeLLM's frame-index timestamps (seed 003) as a head: boundaries are two-digit indices of 100 equal parts.

VTimeLLM feeds 100 uniformly sampled frames (first and last included) and writes a moment as "from 05 to 37"; the
span is ``index / 100 * duration``. Here the indices name 100 equal parts of the video whatever frames the data
configuration samples (Qwen2.5-VL reads absolute time from its temporal position ids, not from a frame count), and
the answer sits in the think + answer layout the other tasks and the ``format`` reward use:
``<think>...</think> <answer>from 05 to 37</answer>``. The resolution is 1/100 of the duration.
"""

from __future__ import annotations

import re

from invert4tvg.policy.text_timestamps import TextTimestampPolicy
from invert4tvg.tasks.prompts import THINK_THEN
from rewards import answer_text

BINS = 100  # "from 00 to 99": two digits
INDEX_SPAN = re.compile(r"from\s+([0-9]{1,2})\s+to\s+([0-9]{1,2})(?![0-9])", re.IGNORECASE)


def frame_index(seconds: float, duration: float) -> int:
    """The part of the video ``seconds`` falls in: ``min(round(t / duration * 100), 99)``, at least 0."""
    return min(max(round(seconds / duration * BINS), 0), BINS - 1)


class VTimeLLMPolicy(TextTimestampPolicy):
    """Text answers with boundaries as frame indices 00-99; SFT targets and decoding otherwise as text timestamps."""

    name = "vtimellm"
    answers_in_seconds = False  # frame indices
    answer_instruction = (
        f"{THINK_THEN} give when it starts and ends as frame indices from 00 to 99 (the video cut into 100 equal "
        "parts) inside <answer></answer>, like <answer>from 05 to 37</answer>."
    )

    def write_span(self, start: float, end: float, duration: float) -> str:
        return f"from {frame_index(start, duration):02d} to {frame_index(end, duration):02d}"

    def read_span(self, text: str, duration: float) -> tuple[float, float] | None:
        """The last "from S to E" of the last answer block, in seconds; None when absent or reversed."""

        answer = answer_text(text)
        matches = INDEX_SPAN.findall(answer) if answer is not None else []
        if not matches:
            return None
        first, last = int(matches[-1][0]), int(matches[-1][1])
        if first > last:
            return None
        return first / BINS * duration, last / BINS * duration
