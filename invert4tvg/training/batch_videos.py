"""Decoding a batch's videos, and the budget of decode failures a run tolerates before it stops (both trainers)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from invert4tvg.data.cache import FrameCache
from invert4tvg.data.video import VideoDecodeError, decode_video
from invert4tvg.errors import UserError
from invert4tvg.tasks import TaskInstance

logger = logging.getLogger(__name__)


class BadVideosError(UserError, RuntimeError):
    """Too many of the run's videos cannot be decoded; the message lists them."""


class VideoFailureBudget:
    """Counts videos that failed to decode; stops the run when too many fail instead of training on what is left.

    Two rules, either stops: more than ``max_fraction`` of the decodes so far failed (once ``min_seen`` videos were
    tried, so one early failure does not stop a large run), or the distinct failed videos already exceed
    ``max_fraction`` of the ``total`` distinct videos of the training set, so the fraction is certain to be exceeded
    whatever comes next (4 unreadable videos out of 4 stop at the first failure, not after 20 skipped steps)."""

    def __init__(self, max_fraction: float, min_seen: int = 20, total: int | None = None) -> None:
        self.max_fraction = max_fraction
        self.min_seen = min_seen
        self.total = total
        self.seen = 0
        self.failed: dict[str, str] = {}

    def record(self, ok: int, failures: dict[str, str]) -> None:
        self.seen += ok + len(failures)
        self.failed.update(failures)
        fraction = len(self.failed) / max(self.seen, 1)
        certain = bool(self.total) and len(self.failed) > self.max_fraction * self.total
        if self.failed and (certain or (self.seen >= self.min_seen and fraction > self.max_fraction)):
            listed = "\n".join(f"  {path}: {why}" for path, why in list(self.failed.items())[:20])
            more = f"\n  ... and {len(self.failed) - 20} more" if len(self.failed) > 20 else ""
            share = (
                f"{len(self.failed)} of the training set's {self.total} videos"
                if certain
                else f"{len(self.failed)} of {self.seen} videos decoded so far"
            )
            ratio = len(self.failed) / self.total if certain else fraction
            raise BadVideosError(
                f"{share} failed to decode ({ratio:.1%} > max_bad_video_fraction={self.max_fraction:.1%}); "
                "fix or remove them (`invert4tvg data check --video-dir ...` lists them), or raise "
                f"max_bad_video_fraction:\n{listed}{more}"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "failed": dict(self.failed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.failed = state["seen"], dict(state["failed"])


def decode_or_skip(instance: TaskInstance, cache: FrameCache | None, failures: dict[str, str]) -> Any | None:
    """The instance's decoded video (or clip), or None when it does not decode: the reason goes in ``failures``
    (video path -> reason) and the log. The one place a batch's video failure is caught (trainers and evaluation)."""
    try:
        return decode_video(instance.video, cache)
    except VideoDecodeError as err:
        failures[instance.video.path] = str(err)
        logger.warning("video of %s (%s) failed to decode: %s", instance.record_id, instance.task, err)
        return None


def load_videos(
    instances: Sequence[TaskInstance], cache: FrameCache | None, budget: VideoFailureBudget
) -> tuple[list[TaskInstance], list]:
    """Decode each instance's video (or clip); instances whose video fails are dropped and counted."""
    kept, videos, failures = [], [], {}
    for instance in instances:
        video = decode_or_skip(instance, cache, failures)
        if video is not None:
            kept.append(instance)
            videos.append(video)
    budget.record(len(kept), failures)
    return kept, videos
