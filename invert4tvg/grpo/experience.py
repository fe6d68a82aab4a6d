"""The experience-collection half of a GRPO step: task instances -> videos -> G completions each -> rewards.

Everything the update half needs comes back in one :class:`Rollouts`: the sequence batch (with the video tensors
every later forward pass reuses), rewards, their components for logging, and counts of what was skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from invert4tvg.modeling.sequences import SequenceBatch
from invert4tvg.policy.base import Policy
from invert4tvg.rollout.base import Completion, RolloutRequest
from invert4tvg.tasks import TaskInstance, reward_columns


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
    timings: dict[str, float] = field(default_factory=dict)  # time/<phase> of the step, for the metrics


def decoded_columns(
    policy: Policy,
    requests: Sequence[RolloutRequest],
    completions: Sequence[Sequence[Completion]],
    instances: Sequence[TaskInstance],
) -> dict[str, list[Any]]:
    """The head's reading of each grounding completion, as reward columns: ``pred_span`` ([start, end] seconds,
    None when it does not parse), ``pred_saliency`` and ``pred_mask`` (per-frame foreground probability and 0/1
    decision, None for heads without frames). Rewards and step metrics read these instead of parsing text."""
    grounding = [i for i, inst in enumerate(instances) if inst.task == "tvg"]
    decoded = policy.decode_completions(
        [requests[i] for i in grounding],
        [completions[i] for i in grounding],
        [float(instances[i].columns["duration"]) for i in grounding],
    )
    by_request = dict(zip(grounding, decoded))
    columns: dict[str, list[Any]] = {"pred_span": [], "pred_saliency": [], "pred_mask": []}
    for i, group in enumerate(completions):
        for k in range(len(group)):
            found = by_request[i][k] if i in by_request else None
            columns["pred_span"].append(None if found is None else list(found.span))
            columns["pred_saliency"].append(None if found is None else found.saliency)
            columns["pred_mask"].append(None if found is None else found.mask)
    return columns


def grounding_spans(columns: dict[str, list[Any]]) -> list[tuple[float, float, float] | None]:
    """Per completion: the ground truth ``(start, end, duration)`` of a grounding completion, None for the others
    (what a head's supervised loss needs when it is kept in RL)."""
    return [
        (float(s), float(e), float(d)) if task == "tvg" else None
        for task, s, e, d in zip(columns["task"], columns["start"], columns["end"], columns["duration"])
    ]


def rollout_requests(
    policy: Policy, instances: Sequence[TaskInstance], videos: Sequence[Any], num_generations: int
) -> list[RolloutRequest]:
    """One request per instance (its decoded video, ``num_generations`` samples), held to the head's constraint."""
    return [
        policy.rollout_request(inst.messages, video, num_generations, inst.record_id, inst.task)
        for inst, video in zip(instances, videos)
    ]


def score_rollouts(
    policy: Policy,
    score: Callable[..., tuple[list[float | None], dict[str, list[float | None]]]],
    instances: Sequence[TaskInstance],
    requests: Sequence[RolloutRequest],
    completions: list[list[Completion]],
    num_generations: int,
) -> Rollouts:
    """The head's reading of each completion, the rewards, and the sequences every later pass scores."""
    flat = [c for group in completions for c in group]
    columns = reward_columns(instances, num_generations)
    columns.update(decoded_columns(policy, requests, completions, instances))
    totals, components = score([c.text for c in flat], **columns)
    return Rollouts(
        instances=list(instances),
        completions=completions,
        batch=policy.sequence_batch(requests, completions),
        rewards=torch.tensor([math.nan if s is None else float(s) for s in totals], dtype=torch.float32),
        components=components,
        columns=columns,
        truncated=torch.tensor([c.finish_reason == "length" for c in flat]),
    )
