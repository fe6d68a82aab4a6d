"""What one GRPO step logs: rewards per task, IoU, format rate, VC/AR/VD accuracy, KL, clipping, lengths,
throughput and where the time went."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from invert4tvg.grpo.experience import Rollouts
from invert4tvg.grpo.loss import Advantages
from invert4tvg.training.batch_videos import VideoFailureBudget
from invert4tvg.training.distributed import gather_objects
from rewards.base import INVERSION_TASKS
from rewards.composite import TASK_SLOTS

SINGLE_TASK_COMPONENTS = frozenset(TASK_SLOTS.values())


@dataclass
class GatheredRollouts:
    """What :func:`step_metrics` reads of a :class:`Rollouts`, concatenated over all processes."""

    columns: dict[str, list[Any]]
    completions: list[list[Any]]
    rewards: torch.Tensor
    components: dict[str, list[float | None]]
    truncated: torch.Tensor
    timings: dict[str, float]


def gather_for_metrics(accelerator, rollouts: Rollouts, advantages: Advantages) -> tuple[Any, Advantages]:
    """The step's rollouts and group counts from every process (as TRL logs), so the logged rewards, IoU, lengths
    and counters describe the global batch, not process 0's share. Timings are the slowest process's."""
    if accelerator.num_processes == 1:
        return rollouts, advantages

    local = {
        "tasks": list(rollouts.columns["task"]),
        "pred_span": list(rollouts.columns["pred_span"]),
        "completions": rollouts.completions,
        "rewards": rollouts.rewards.tolist(),
        "components": rollouts.components,
        "truncated": rollouts.truncated.tolist(),
        "timings": rollouts.timings,
        "groups": (advantages.zero_std_groups, advantages.num_groups),
    }
    parts = gather_objects(accelerator, local)
    names = sorted({k for part in parts for k in part["components"]})
    components = {
        k: [v for part in parts for v in part["components"].get(k) or [None] * len(part["rewards"])]
        for k in names
    }
    gathered = GatheredRollouts(
        columns={
            "task": [t for part in parts for t in part["tasks"]],
            "pred_span": [s for part in parts for s in part["pred_span"]],
        },
        completions=[g for part in parts for g in part["completions"]],
        rewards=torch.tensor([r for part in parts for r in part["rewards"]], dtype=torch.float32),
        components=components,
        truncated=torch.tensor([t for part in parts for t in part["truncated"]], dtype=torch.bool),
        timings={k: max(part["timings"].get(k, 0.0) for part in parts) for k in rollouts.timings},
    )
    counts = Advantages(
        values=advantages.values,
        zero_std_groups=sum(part["groups"][0] for part in parts),
        num_groups=sum(part["groups"][1] for part in parts),
    )
    return gathered, counts


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else None


def _std(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1))  # torch.std's (n - 1)


def reward_metrics(components: dict[str, list[float | None]], tasks: list[str]) -> dict[str, float | None]:
    """TRL's ``rewards/<name>/mean`` and ``/std`` per reward function (and per component of ``invert4tvg``) over
    the completions it scored, plus ``rewards/<name>/<task>/mean`` per task for a reward that can score several
    tasks: with one task per step its plain curve alternates between tasks, the per-task one does not. The
    components that score one task only (``iou``, ``vc``, ``ar``, ``vd``) get no per-task key, which would repeat
    the plain one (``rewards/vc/vc/mean``)."""
    row: dict[str, float | None] = {}
    for name, scores in sorted(components.items()):
        row[f"rewards/{name}/mean"] = _mean(scores)
        row[f"rewards/{name}/std"] = _std(scores)
        if name in SINGLE_TASK_COMPONENTS:
            continue
        for task in sorted(set(tasks)):
            row[f"rewards/{name}/{task}/mean"] = _mean([s for s, t in zip(scores, tasks) if t == task])
    return row


def step_metrics(
    rollouts: Rollouts,
    advantages: Advantages,
    update: dict[str, float],
    sampler: Any,
    video_budget: VideoFailureBudget,
    elapsed: float,
    epoch: float,
    lr: float,
) -> dict[str, Any]:
    tasks = rollouts.columns["task"]
    flat = [c for group in rollouts.completions for c in group]
    rewards = rollouts.rewards.tolist()
    row: dict[str, Any] = {
        "epoch": round(epoch, 4),
        "task": ",".join(sorted(set(tasks))),
        "reward": _mean(rewards),
        "reward_std": float(rollouts.rewards[~rollouts.rewards.isnan()].std()) if len(flat) > 1 else 0.0,
    }
    for task in sorted(set(tasks)):
        row[f"reward/{task}"] = _mean([r for r, t in zip(rewards, tasks) if t == task])
    components = rollouts.components
    row.update(reward_metrics(components, tasks))
    if "format" in components:
        row["format"] = _mean(components["format"])
    tvg = [i for i, t in enumerate(tasks) if t == "tvg"]
    if tvg:
        row["iou"] = _mean([components["iou"][i] for i in tvg]) if "iou" in components else None
        failures = sum(rollouts.columns["pred_span"][i] is None for i in tvg)  # the head's decoding
        row["parse_failures"] = failures  # the trainer adds them to its running count
        row["parse_fail"] = failures / len(tvg)
    for task in INVERSION_TASKS:
        rows = [i for i, t in enumerate(tasks) if t == task]
        if rows and task in components:
            row[f"acc/{task}"] = _mean([components[task][i] for i in rows])
    lengths = [len(c.token_ids) for c in flat] or [0]
    generated = sum(lengths)
    # TRL 1.16's names where the quantity is the same (docs/training.md, "Logged metrics").
    row.update(
        {
            "completions/mean_length": generated / len(lengths),
            "completions/min_length": min(lengths),
            "completions/max_length": max(lengths),
            "completions/clipped_ratio": float(rollouts.truncated.float().mean()),
            "frac_reward_zero_std": advantages.zero_std_groups / max(advantages.num_groups, 1),
            "zero_std_groups": advantages.zero_std_groups,
            "sequences": len(flat),  # completions of the step, all processes
            "tokens_per_s": generated / max(rollouts.timings.get("time/rollout", 0.0), 1e-9),
            "learning_rate": lr,
            "bad_videos": len(video_budget.failed),
            "task_fallbacks": sum(getattr(sampler, "fallbacks", {}).values()),
            **update,
            **rollouts.timings,
            "time/step": elapsed,
        }
    )
    return {k: v for k, v in row.items() if v is not None}
