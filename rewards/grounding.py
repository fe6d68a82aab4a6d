"""Rewards of the grounding task itself (seed paper eqs. 8-9): ``format`` and ``iou``; and span parsing."""

from __future__ import annotations

import math
import re
from typing import Any

from rewards.base import Columns, Reward
from rewards.completions import answer_text, has_answer_only_format, has_valid_format
from rewards.errors import ColumnValueError
from rewards.registry import register

# "A to B" / "A and B", A and B non-negative decimals. The look-behind rejects "-3 to 5" (and does not read it as
# "3 to 5", which the public code's pattern would); ASCII digits only, so no exotic Unicode digit parses.
SPAN_PATTERN = re.compile(
    r"(?<![0-9.\-])([0-9]+(?:\.[0-9]*)?)\s+(?:to|and)\s+([0-9]+(?:\.[0-9]*)?)", re.IGNORECASE
)

# Time-R1's evaluation pattern (evaluate.py, extract_answer: ``(\d+\.?\d*) (to|and) (\d+\.?\d*)``, exactly one
# ASCII space each side of a lower-case "to" / "and", Unicode digits, no sign check), made linear: that pattern is
# quadratic on a long digit run. The same matches (checked on random text in the tests): a match never starts right
# after a digit (the scan would have started one digit earlier), and only the longest number can be followed by the
# space, so the first number may be atomic.
TIME_R1_SPAN_PATTERN = re.compile(r"(?<!\d)((?>\d+\.?\d*)) (to|and) (\d+\.?\d*)")

Span = tuple[float, float]


def parse_span(text: str, *, require_answer: bool = True) -> Span | None:
    """The predicted ``(start, end)`` in seconds, parsed exactly as the ``iou`` reward does.

    Reads the last ``<answer>`` block (the whole text when ``require_answer`` is False and there is none), takes the
    last "A to B" / "A and B" in it, and returns None when nothing parses, a number is not finite, or A > B.
    """
    answer = answer_text(text)
    if answer is None:
        if require_answer:
            return None
        answer = text
    matches = SPAN_PATTERN.findall(answer)
    if not matches:
        return None
    start, end = float(matches[-1][0]), float(matches[-1][1])
    if not (math.isfinite(start) and math.isfinite(end)) or start > end:
        return None
    return start, end


def parse_span_time_r1(text: str) -> Span | None:
    """The span as Time-R1's public evaluation reads it, for reproducing published numbers exactly.

    The last "A to B" / "A and B" (one ASCII space each side, lower-case "to" / "and") *anywhere* in the output:
    inside or outside the answer block, in the think block, with unclosed or differently-cased tags. A reversed span
    is returned as it is (its IoU is 0 either way). None when nothing matches.
    """
    last = None
    for last in TIME_R1_SPAN_PATTERN.finditer(text):  # noqa: B007 (only the last match is used)
        pass
    if last is None:
        return None
    return float(last.group(1)), float(last.group(3))


# Evaluation parsers by name (``invert4tvg eval --parser``). "answer" is the ``iou`` reward's own parser.
SPAN_PARSERS = {"answer": parse_span, "time-r1": parse_span_time_r1}


def temporal_iou(a: Span, b: Span) -> float:
    """Intersection over union of two time spans. 0 for a reversed or non-finite span and when the union is 0."""
    s1, e1 = float(a[0]), float(a[1])
    s2, e2 = float(b[0]), float(b[1])
    if not all(math.isfinite(x) for x in (s1, e1, s2, e2)) or s1 > e1 or s2 > e2:
        return 0.0
    inter = max(0.0, min(e1, e2) - max(s1, s2))
    union = (e1 - s1) + (e2 - s2) - inter
    if not union > 0.0:
        return 0.0
    iou = inter / union
    return min(1.0, iou) if math.isfinite(iou) else 0.0


@register("format")
class FormatReward(Reward):
    """1 when the stripped completion is exactly ``<think>...</think> <answer>...</answer>``, else 0 (eq. 9)."""

    name = "format"

    def score_one(self, i: int, text: str, cols: Columns, prepared: Any) -> float:
        return 1.0 if has_valid_format(text) else 0.0


@register("answer_format")
class AnswerFormatReward(Reward):
    """1 when the stripped completion is exactly ``<answer>...</answer>``, else 0.

    The public Invert4TVG code scores its inversion tasks with this format (its VC prompt asks for no think
    block); the paper's eq. 11 uses ``format``. ``Invert4TVGReward(inversion_format="answer_only")`` uses it.
    """

    name = "answer_format"

    def score_one(self, i: int, text: str, cols: Columns, prepared: Any) -> float:
        return 1.0 if has_answer_only_format(text) else 0.0


@register("iou")
class IoUReward(Reward):
    """Temporal IoU between the predicted span and ``[start, end]`` (eq. 8); 0 when the answer does not parse.

    The prediction is the ``pred_span`` column when the caller passes one (the trainer does: the policy head's
    decoding, whatever the head emits; None is a parse failure), else the text answer read by ``parse_span``.

    ``clip=True`` clips the prediction *and the ground truth* to ``[0, duration]`` first (needs the ``duration``
    column): real annotations end past the video (562 of Charades-STA's 3,720 test spans), and clipping only the
    prediction would cap a perfect answer below 1. The default clips neither, as in the public Time-R1 / Invert4TVG
    code.
    """

    name = "iou"
    tasks = frozenset({"tvg"})

    def __init__(self, *, clip: bool = False, on_error: str = "raise") -> None:
        super().__init__(on_error=on_error)
        self.clip = clip
        self.columns = ("start", "end", "duration") if clip else ("start", "end")

    def __repr__(self) -> str:
        return f"IoUReward(clip={self.clip}, on_error={self.on_error!r})"

    def score_one(self, i: int, text: str, cols: Columns, prepared: Any) -> float:
        start, end = cols.number("start", i), cols.number("end", i)
        if start > end:
            raise ColumnValueError("end", f"ground-truth end {end} is before start {start}")
        span = _predicted(cols, i) if cols.has("pred_span") else parse_span(text)
        if span is None:
            return 0.0
        if self.clip:
            duration = cols.number("duration", i)
            span = _clip(span, duration)
            start, end = _clip((start, end), duration)
        return temporal_iou(span, (start, end))


def _predicted(cols: Columns, i: int) -> Span | None:
    value = cols.value("pred_span", i)
    if value is None:
        return None
    try:
        start, end = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ColumnValueError("pred_span", f"expected [start, end] or None, got {value!r}") from None
    return start, end


def _clip(span: Span, duration: float) -> Span:
    return min(max(span[0], 0.0), duration), min(max(span[1], 0.0), duration)
