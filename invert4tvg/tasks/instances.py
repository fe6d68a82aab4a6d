"""Turning a grounding record into one task instance: chat messages, the video to feed, and the reward columns."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from invert4tvg.data.frames import VideoSampling, VideoSpec
from invert4tvg.data.records import GroundingRecord
from invert4tvg.tasks.masking import NoVerbError, TaskUnavailable, mask_query
from invert4tvg.tasks.prompts import TASKS, PromptTemplates
from rewards import nlp

# Columns every instance carries, whatever its task, so a mixed batch has the same keys on every sample.
REWARD_COLUMNS = ("task", "query", "start", "end", "duration", "masked_query", "masked_verbs", "record_id")


@dataclass
class TaskInstance:
    """One prompt of one task for one record.

    ``video`` is the whole video for "tvg" and the ground-truth clip ``[start, end]`` for "vc", "ar" and "vd".
    ``columns`` are the reward columns of this sample (see ``REWARD_COLUMNS``).
    """

    task: str
    record_id: str
    messages: list[dict[str, Any]]
    video: VideoSpec
    columns: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The text of the user turn."""
        for part in self.messages[-1]["content"]:
            if part.get("type") == "text":
                return part["text"]
        return ""


def build_messages(prompt: str, system: str | None = None) -> list[dict[str, Any]]:
    """Qwen2-VL chat messages: an optional system turn, then the video placeholder and the prompt."""
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]})
    return messages


def build_task_instance(
    record: GroundingRecord,
    task: str,
    sampling: VideoSampling | None = None,
    templates: PromptTemplates | None = None,
    mask: str = "all",
    rng: np.random.Generator | None = None,
) -> TaskInstance:
    """The instance of ``task`` for ``record``.

    Raises :class:`NoVerbError` when an inversion task ("vc", "ar", "vd") gets a query without a main verb (VD is
    included: with no verb to find, its reward would be vacuously 1), and :class:`TaskUnavailable` when the
    ground-truth clip is empty. "tvg" is always available. ``mask`` and ``rng`` are for VC (see ``mask_query``).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {TASKS}")
    sampling = sampling or VideoSampling()
    templates = templates or PromptTemplates()
    start, end, duration = float(record.start), float(record.end), float(record.duration)
    masked_query, masked_verbs = "", []
    if task == "tvg":
        video = VideoSpec(record.video, None, sampling)
    else:
        if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
            raise TaskUnavailable(f"record {record.id!r}: empty ground-truth clip [{start}, {end}]")
        if task == "vc":
            masked = mask_query(record.query, mask, rng)
            masked_query, masked_verbs = masked.text, list(masked.verbs)
        elif not nlp.action_verb_lemmas([record.query])[0]:
            raise NoVerbError(f"record {record.id!r}: query has no verb: {record.query!r}")
        video = VideoSpec(record.video, (start, end), sampling)
    prompt = templates.render(task, query=record.query, masked_query=masked_query, duration=duration)
    columns = {
        "task": task,
        "query": record.query,
        "start": start,
        "end": end,
        "duration": duration,
        "masked_query": masked_query,
        "masked_verbs": masked_verbs,
        "record_id": record.id,
    }
    return TaskInstance(task, record.id, build_messages(prompt, templates.system), video, columns)


def reward_columns(instances: Sequence[TaskInstance], num_generations: int = 1) -> dict[str, list[Any]]:
    """Reward kwargs for a batch: each instance's columns repeated ``num_generations`` times in a row.

    This is TRL's layout: the G completions of one prompt are consecutive.
    """
    if num_generations < 1:
        raise ValueError("num_generations must be at least 1")
    keys = list(dict.fromkeys(k for inst in instances for k in inst.columns)) or list(REWARD_COLUMNS)
    return {
        key: [inst.columns.get(key) for inst in instances for _ in range(num_generations)] for key in keys
    }
