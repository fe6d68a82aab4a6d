"""An example reward plugin: 1 when the predicted span lies inside the video, else 0.

Written with TRL's reward signature, so the same function also works as a ``reward_funcs`` entry of TRL's
``GRPOTrainer``. It reads the ``duration`` column and parses answers with the library's own ``parse_span``.
"""

from __future__ import annotations

from typing import Any

from rewards import completion_text, parse_span


def span_in_video(completions: list[Any], duration: list[float], **columns: Any) -> list[float | None]:
    """Per completion: 1.0 when its answer parses to a span within ``[0, duration]``, else 0.0."""
    scores: list[float | None] = []
    for completion, length in zip(completions, duration):
        span = parse_span(completion_text(completion))
        scores.append(1.0 if span is not None and span[1] <= float(length) else 0.0)
    return scores
