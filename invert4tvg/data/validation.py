"""Checks every grounding sample passes on its way to a record, with a count of everything rejected or clipped.

Used by every loader in :mod:`invert4tvg.data.formats`: times must be numbers, finite, ``end > start``, the
duration must be known and positive, ids unique, the query non-empty and, when a video directory is given, the video
file present. ``on_error="raise"`` stops at the first problem with a :class:`DataError`; ``"skip"`` drops the sample
and counts it under its reason, so nothing disappears unaccounted for.

Spans that leave the video (real annotations do: 562 of Charades-STA's 3,720 test spans end after the video) follow
the ``overshoot`` policy, and every one is counted in the report's ``overshoot`` section whatever the policy:

- ``"drop"`` (the default, for training): an overshoot of at most ``tolerance`` seconds is clipped, a larger one
  rejects the sample (``span_beyond_duration``, ``negative_start``);
- ``"clip"`` (training): every span is clipped to ``[0, duration]``; only a span with nothing inside the video is
  rejected;
- ``"keep"`` (evaluation): the span stays as published, as the public evaluation scripts score it.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from invert4tvg.data.records import GroundingRecord
from invert4tvg.errors import UserError

OnError = Literal["raise", "skip"]
Overshoot = Literal["drop", "clip", "keep"]
OVERSHOOT_POLICIES: tuple[str, ...] = ("drop", "clip", "keep")
DEFAULT_TOLERANCE = 1.0  # seconds a span may overshoot the video and still be clipped rather than rejected
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
MAX_LISTED = 200  # problems listed one by one in a report; all of them are counted

REASONS: dict[str, str] = {
    "malformed": "the line or entry does not have the format's structure",
    "non_numeric_time": "a start or end time is not a number",
    "non_finite_time": "a start or end time is NaN or infinite",
    "end_not_after_start": "the span's end is not after its start",
    "negative_start": "the span starts before 0 by more than the tolerance",
    "span_beyond_duration": "the span ends after the video by more than the tolerance",
    "missing_duration": "no duration for the video (in the file or the duration map)",
    "invalid_duration": "the duration is not a positive finite number",
    "missing_span": "the entry has no time span (e.g. a QVHighlights test split)",
    "empty_query": "the query sentence is empty",
    "duplicate_id": "the id (or the same video, span and sentence) occurred before",
    "missing_video": "no file for the video in --video-dir",
    "video_outside_dir": "the annotation's video path leaves --video-dir (../ or an absolute path elsewhere)",
}


class DataError(UserError, ValueError):
    """A sample that fails a check; the message names the file, the line or key, and the reason."""

    HINT = (
        "Fix or remove the entry, or set on_bad_record: skip (on_error='skip' in Python) to drop and count such "
        "samples; `invert4tvg data check` lists every problem in the file."
    )

    def __init__(self, file: str, where: str, reason: str, detail: str, hint: str | None = None) -> None:
        self.file, self.where, self.reason, self.detail = str(file), where, reason, detail
        super().__init__(
            f"{self.file}, {where}: {reason} ({detail}). {self.HINT if hint is None else hint}".strip()
        )


@dataclass
class Raw:
    """One sample as read from a file, before any check. ``where`` locates it for messages."""

    where: dict[str, Any]  # {"line": n} | {"key": vid, "index": i} | {"item": i}
    id: str
    video_id: str
    start: Any
    end: Any
    query: Any
    duration: Any = None  # None: look the video up in the duration map
    video_ref: str | None = None  # an explicit path from the annotation (Time-R1)


def where_text(where: dict[str, Any]) -> str:
    if "line" in where:
        return f"line {where['line']}"
    if "key" in where:
        suffix = f"[{where['index']}]" if "index" in where else ""
        return f"key {where['key']!r}{suffix}"
    if "item" in where:
        return f"item {where['item']}"
    return "file"


class OutsideVideoDir(ValueError):
    """An annotation's video path that resolves outside the video directory."""


class VideoIndex:
    """Video files under a directory (searched recursively), found by stem; ActivityNet's ``v_`` prefix optional.

    A path an annotation names (Time-R1's ``video``) is resolved against the directory and must stay inside it:
    ``../../elsewhere/x.mp4``, or an absolute path elsewhere, raises :class:`OutsideVideoDir` instead of being read.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"video directory {self.root} does not exist")
        rank = {ext: i for i, ext in enumerate(VIDEO_EXTENSIONS)}
        best: dict[str, tuple[int, str]] = {}
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                stem, ext = os.path.splitext(name)
                if ext.lower() in rank and not name.startswith("."):
                    candidate = (rank[ext.lower()], os.path.join(dirpath, name))
                    if stem not in best or candidate < best[stem]:
                        best[stem] = candidate
        self.by_stem = {stem: path for stem, (_, path) in best.items()}

    def find(self, video_id: str, ref: str | None = None) -> str | None:
        if ref:
            root = os.path.abspath(self.root)
            target = os.path.abspath(os.path.join(root, ref))  # an absolute ref stays itself; ".." is folded
            if os.path.commonpath([root, target]) != root:
                raise OutsideVideoDir(f"video path {ref!r} leaves the video directory {self.root} ({target})")
            if os.path.isfile(target):
                return target if Path(ref).is_absolute() else str(self.root / os.path.relpath(target, root))
            video_id = Path(ref).stem
        for stem in (video_id, video_id.removeprefix("v_"), f"v_{video_id}"):
            if stem in self.by_stem:
                return self.by_stem[stem]
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


@dataclass
class Validator:
    """Turns :class:`Raw` samples into records, applying every check and keeping the counts."""

    file: str
    source: str
    on_error: OnError = "raise"
    durations: dict[str, Any] = field(default_factory=dict)
    videos: VideoIndex | None = None
    tolerance: float = DEFAULT_TOLERANCE
    overshoot: Overshoot = "drop"
    records: list[GroundingRecord] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)
    clipped: list[dict[str, Any]] = field(default_factory=list)
    blank_lines: int = 0
    overshoots: list[float] = field(default_factory=list)  # seconds past the video, per accepted record
    max_past_end: float = 0.0  # over every span read, dropped ones included
    _seen: dict[Any, str] = field(default_factory=dict)

    def reject(self, where: dict[str, Any], reason: str, detail: str, samples: int = 1) -> None:
        """Reject ``samples`` samples at once (a whole video entry counts every sample it held)."""
        if self.on_error == "raise":
            raise DataError(self.file, where_text(where), reason, detail)
        self.reasons[reason] += samples
        extra = {"samples": samples} if samples != 1 else {}
        self.problems.append({"file": self.file, **where, "reason": reason, "detail": detail, **extra})

    def claim(self, where: dict[str, Any], identity: Any, detail: str) -> bool:
        """Register a unique identity; reject the sample as a duplicate when it was seen before."""
        if identity in self._seen:
            self.reject(where, "duplicate_id", f"{detail} already at {self._seen[identity]}")
            return False
        self._seen[identity] = where_text(where)
        return True

    def duration_of(self, raw: Raw) -> float | None:
        value = raw.duration
        if value is None:
            value = self.durations.get(raw.video_id)
            if value is None and raw.video_id.startswith("v_"):
                value = self.durations.get(raw.video_id[2:])
        if value is None:
            self.reject(raw.where, "missing_duration", f"video {raw.video_id!r} has no duration")
            return None
        duration = _number(value)
        if duration is None or not math.isfinite(duration) or duration <= 0:
            self.reject(raw.where, "invalid_duration", f"duration {value!r} of video {raw.video_id!r}")
            return None
        return duration

    def add(self, raw: Raw) -> None:
        query = raw.query.strip() if isinstance(raw.query, str) else None
        if query is None:
            self.reject(raw.where, "malformed", f"query must be a string, got {type(raw.query).__name__}")
            return
        start, end = _number(raw.start), _number(raw.end)
        if start is None or end is None:
            self.reject(raw.where, "non_numeric_time", f"span [{raw.start!r}, {raw.end!r}]")
            return
        if not (math.isfinite(start) and math.isfinite(end)):
            self.reject(raw.where, "non_finite_time", f"span [{start}, {end}]")
            return
        if end <= start:
            self.reject(raw.where, "end_not_after_start", f"span [{start:g}, {end:g}]")
            return
        if not query:
            self.reject(raw.where, "empty_query", "the sentence is empty")
            return
        duration = self.duration_of(raw)
        if duration is None:
            return
        self.max_past_end = max(self.max_past_end, end - duration)
        if self.overshoot == "drop" and start < -self.tolerance:
            self.reject(
                raw.where, "negative_start", f"span [{start:g}, {end:g}], tolerance {self.tolerance:g} s"
            )
            return
        if self.overshoot == "drop" and end > duration + self.tolerance:
            self.reject(
                raw.where,
                "span_beyond_duration",
                f"span [{start:g}, {end:g}] in a {duration:g} s video, tolerance {self.tolerance:g} s "
                "(overshoot='clip' clips it, 'keep' keeps it as published)",
            )
            return
        if self.overshoot == "keep":
            new_start, new_end = start, end
        else:
            new_start, new_end = max(start, 0.0), min(end, duration)
        if new_end <= new_start:
            self.reject(
                raw.where,
                "end_not_after_start",
                f"span [{start:g}, {end:g}] after clipping to {duration:g} s",
            )
            return
        video = ""
        if self.videos is not None:
            try:
                video = self.videos.find(raw.video_id, raw.video_ref)
            except OutsideVideoDir as err:
                self.reject(raw.where, "video_outside_dir", str(err))
                return
            if video is None:
                self.reject(
                    raw.where,
                    "missing_video",
                    f"no file for {raw.video_ref or raw.video_id!r} in {self.videos.root}",
                )
                return
        elif raw.video_ref:
            video = raw.video_ref
        if not self.claim(raw.where, ("id", raw.id), f"id {raw.id!r}"):
            return
        if (new_start, new_end) != (start, end):
            self.clipped.append(
                {"file": self.file, **raw.where, "from": [start, end], "to": [new_start, new_end]}
            )
        if end > duration:
            self.overshoots.append(end - duration)
        self.records.append(
            GroundingRecord(raw.id, raw.video_id, video, duration, new_start, new_end, query, self.source)
        )

    def report(self) -> dict[str, Any]:
        return {
            "records": len(self.records),
            "videos": len({r.video_id for r in self.records}),
            "skipped": sum(self.reasons.values()),
            "skipped_by_reason": dict(sorted(self.reasons.items())),
            "clipped": len(self.clipped),
            "blank_lines": self.blank_lines,
            "errors": self.problems[:MAX_LISTED],
            "errors_not_listed": max(0, len(self.problems) - MAX_LISTED),
            "clipped_examples": self.clipped[:20],
            "overshoot": self.overshoot_report(),
        }

    def overshoot_report(self) -> dict[str, Any]:
        """How many spans end after their video, and what the policy did with them."""
        kept = len(self.overshoots)
        return {
            "policy": self.overshoot,
            "tolerance": self.tolerance,
            # records whose published span ends after the video (clipped or kept as published, per the policy)
            "spans_past_end": kept,
            "spans_past_end_beyond_tolerance": sum(o > self.tolerance for o in self.overshoots),
            "max_seconds_past_end": round(self.max_past_end, 3),
            "clipped": kept if self.overshoot != "keep" else 0,
            "kept_as_published": kept if self.overshoot == "keep" else 0,
            "dropped": self.reasons.get("span_beyond_duration", 0) if self.overshoot == "drop" else 0,
        }
