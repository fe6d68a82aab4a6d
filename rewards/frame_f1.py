"""Frame-level grounding: the windows a span covers, and the ``frame_f1`` reward over a head's per-window mask.

A head that answers one foreground/background decision per equal window of the video (``frame_seg``) puts its
mask in the ``pred_mask`` column; ``frame_f1`` scores it against the windows the ground truth covers (seed 004
suggests frame F1 as an alternative to the IoU of the first moment: it also credits the windows of a second run).
"""

from __future__ import annotations

from typing import Any

from rewards.base import Columns, Reward
from rewards.errors import ColumnValueError
from rewards.registry import register


def window_labels(start: float, end: float, duration: float, windows: int) -> list[int]:
    """1 for each of ``windows`` equal windows whose middle lies in ``[start, end]``; an event shorter than a window
    marks the window holding its middle, so no event is labelled empty."""
    width = duration / windows
    labels = [int(start <= (i + 0.5) * width <= end) for i in range(windows)]
    if not any(labels):
        labels[min(max(int((start + end) / 2 / width), 0), windows - 1)] = 1
    return labels


@register("frame_f1")
class FrameF1Reward(Reward):
    """F1 of the predicted foreground windows (``pred_mask``) against the ground truth's; 0 without a mask."""

    name = "frame_f1"
    tasks = frozenset({"tvg"})
    columns = ("start", "end", "duration", "pred_mask")

    def score_one(self, i: int, text: str, cols: Columns, prepared: Any) -> float:
        mask = cols.value("pred_mask", i)
        if not mask:
            return 0.0
        if any(v not in (0, 1) for v in mask):
            raise ColumnValueError("pred_mask", f"expected a list of 0/1 per window, got {mask!r}")
        duration = cols.number("duration", i)
        if not duration > 0:
            raise ColumnValueError("duration", f"expected a positive duration, got {duration}")
        truth = window_labels(cols.number("start", i), cols.number("end", i), duration, len(mask))
        hits = sum(p and t for p, t in zip(mask, truth))
        return 2 * hits / (sum(mask) + sum(truth))
