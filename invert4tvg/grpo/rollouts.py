"""The experience-collection half of a GRPO step: task instances -> videos -> G completions each -> rewards.

Everything the update half needs comes back in one :class:`Rollouts`: the sequence batch (with the video tensors
every later forward pass reuses), rewards, their components for logging, and counts of what was skipped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from invert4tvg.data.video import FrameCache, VideoDecodeError, decode_video
from invert4tvg.policy.base import Policy, SequenceBatch
from invert4tvg.rollout.base import Completion, RolloutEngine, SamplingParams
from invert4tvg.tasks import TaskInstance, reward_columns

logger = logging.getLogger(__name__)


@dataclass
class Rollouts:
    instances: list[TaskInstance]
    completions: list[list[Completion]]
    batch: SequenceBatch
    rewards: torch.Tensor  # (B,) total reward per completion, NaN where no reward function applied
    components: dict[str, list[float | None]]  # per completion: format, iou, vc, ar, vd, ...
    columns: dict[str, list[Any]]  # reward columns, one entry per completion
    truncated: torch.Tensor  # (B,) bool: stopped at max_completion_length
    bad_videos: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class VideoFailureBudget:
    """Counts videos that failed to decode; stops the run when too many fail instead of training on what is left."""

    def __init__(self, max_fraction: float, min_seen: int = 20) -> None:
        self.max_fraction = max_fraction
        self.min_seen = min_seen
        self.seen = 0
        self.failed: dict[str, str] = {}

    def record(self, ok: int, failures: dict[str, str]) -> None:
        self.seen += ok + len(failures)
        self.failed.update(failures)
        fraction = len(self.failed) / max(self.seen, 1)
        if self.failed and self.seen >= self.min_seen and fraction > self.max_fraction:
            listed = "\n".join(f"  {path}: {why}" for path, why in list(self.failed.items())[:20])
            raise RuntimeError(
                f"{len(self.failed)} of {self.seen} videos failed to decode ({fraction:.1%} > "
                f"max_bad_video_fraction={self.max_fraction:.1%}). Fix or remove them (`invert4tvg data check "
                f"--video-dir ...` lists them), or raise max_bad_video_fraction:\n{listed}"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "failed": dict(self.failed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.failed = state["seen"], dict(state["failed"])


def load_videos(
    instances: Sequence[TaskInstance], cache: FrameCache | None, budget: VideoFailureBudget
) -> tuple[list[TaskInstance], list]:
    """Decode each instance's video (or clip); instances whose video fails are dropped and counted."""
    kept, videos, failures = [], [], {}
    for instance in instances:
        try:
            videos.append(decode_video(instance.video, cache))
            kept.append(instance)
        except VideoDecodeError as err:
            failures[instance.video.path] = str(err)
            logger.warning("skipping %s (%s): %s", instance.record_id, instance.task, err)
    budget.record(len(kept), failures)
    return kept, videos


def collect_rollouts(
    instances: Sequence[TaskInstance],
    policy: Policy,
    engine: RolloutEngine,
    score: Callable[..., tuple[list[float | None], dict[str, list[float | None]]]],
    sampling: SamplingParams,
    num_generations: int,
    cache: FrameCache | None,
    budget: VideoFailureBudget,
) -> Rollouts | None:
    """Run one rollout phase. Returns None when no instance of the batch had a readable video."""
    t0 = time.perf_counter()
    failed_before = set(budget.failed)
    instances, videos = load_videos(instances, cache, budget)
    timings = {"time/video": time.perf_counter() - t0}
    if not instances:
        return None
    rollouts = rollouts_from_videos(
        instances, videos, policy, engine, score, sampling, num_generations, timings
    )
    rollouts.bad_videos = sorted(set(budget.failed) - failed_before)
    return rollouts


def rollouts_from_videos(
    instances: Sequence[TaskInstance],
    videos: Sequence[Any],
    policy: Policy,
    engine: RolloutEngine,
    score: Callable[..., tuple[list[float | None], dict[str, list[float | None]]]],
    sampling: SamplingParams,
    num_generations: int,
    timings: dict[str, float] | None = None,
) -> Rollouts:
    """Generate, score and batch the completions of instances whose videos are already decoded."""
    timings = dict(timings or {})
    t0 = time.perf_counter()
    requests = [
        policy.rollout_request(inst.messages, video, num_generations, inst.record_id)
        for inst, video in zip(instances, videos)
    ]
    completions = engine.generate(requests, sampling)
    timings["time/rollout"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    texts = [c.text for group in completions for c in group]
    columns = reward_columns(instances, num_generations)
    totals, components = score(texts, **columns)
    rewards = torch.tensor([math.nan if s is None else float(s) for s in totals], dtype=torch.float32)
    timings["time/reward"] = time.perf_counter() - t0

    batch = policy.sequence_batch(requests, completions)
    truncated = torch.tensor([c.finish_reason == "length" for group in completions for c in group])
    return Rollouts(
        instances=list(instances),
        completions=completions,
        batch=batch,
        rewards=rewards,
        components=components,
        columns=columns,
        truncated=truncated,
        timings=timings,
    )
