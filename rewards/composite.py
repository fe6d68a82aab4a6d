"""The task-dispatching Invert4TVG reward (seed paper eqs. 10-12), so one call scores a mixed batch.

Per sample, by its ``task`` column: ``w_format * format + w_iou * iou`` for "tvg", and
``w_format * format + w_task * r_task`` for an inversion task ("vc", "ar", "vd"). With every weight at 1 (the
default) this is the paper's reward. ``inversion="cosine"`` swaps the binary inversion rewards for the cosine ones
(Table 3 ablation); ``task_rewards`` maps any task to any registered reward (a plugin, or a task of your own).
``inversion_format="answer_only"`` scores the inversion samples' format as the public Invert4TVG code does
(``<answer>...</answer>`` alone) instead of the paper's think + answer template (eq. 11, the default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rewards import registry
from rewards.base import INVERSION_TASKS, GuardedReward, check_policy
from rewards.errors import ColumnLengthError, MissingColumnError, RewardError, RewardSampleError

# The component each task is scored by, under the key the breakdown (and the weights) use for it.
TASK_SLOTS = {"tvg": "iou", "vc": "vc", "ar": "ar", "vd": "vd"}
DEFAULT_WEIGHTS = {"format": 1.0, "iou": 1.0, "vc": 1.0, "ar": 1.0, "vd": 1.0}
INVERSIONS = ("binary", "cosine")
# Format of the inversion tasks' samples: the paper's think + answer template (eq. 11), or the answer-only format
# the public Invert4TVG code scores them with.
INVERSION_FORMATS = ("think_answer", "answer_only")

RewardFn = Callable[..., list[float | None]]


@dataclass
class RewardBreakdown:
    """``total`` per sample, and each component per sample (None where the component does not apply)."""

    total: list[float]
    components: dict[str, list[float | None]]


@registry.register("invert4tvg")
class Invert4TVGReward:
    """Format plus the sample's task reward, weighted; see the module docstring.

    ``components`` in the breakdown are keyed "format", "iou", "vc", "ar", "vd" (and the task name for tasks of
    your own), whichever reward fills the slot.
    """

    name = "invert4tvg"

    def __init__(
        self,
        *,
        weights: Mapping[str, float] | None = None,
        inversion: str = "binary",
        task_rewards: Mapping[str, str | RewardFn] | None = None,
        iou_clip: bool = False,
        embedder: Any = None,
        on_error: str = "raise",
        inversion_format: str = "think_answer",
    ) -> None:
        self.on_error = check_policy(on_error)
        if inversion not in INVERSIONS:
            raise ValueError(f"inversion must be one of {INVERSIONS}, got {inversion!r}")
        if inversion_format not in INVERSION_FORMATS:
            raise ValueError(f"inversion_format must be one of {INVERSION_FORMATS}, got {inversion_format!r}")
        self.inversion = inversion
        self.inversion_format = inversion_format
        mapping: dict[str, str | RewardFn] = {"tvg": "iou"}
        mapping.update({t: ("cosine" if inversion == "cosine" else t) for t in INVERSION_TASKS})
        mapping.update(task_rewards or {})
        self.slots = {task: TASK_SLOTS.get(task, task) for task in mapping}
        self.weights = dict(DEFAULT_WEIGHTS) | {
            slot: 1.0 for slot in self.slots.values() if slot not in DEFAULT_WEIGHTS
        }
        for key, value in (weights or {}).items():
            if key not in self.weights:
                raise ValueError(f"unknown reward weight {key!r}; known: {', '.join(sorted(self.weights))}")
            self.weights[key] = float(value)
        self.format = self._make("format", {})
        self.answer_format = self._make("answer_format", {})
        options = {
            "iou": {"clip": iou_clip},
            "cosine": {"embedder": embedder} if embedder is not None else {},
        }
        self.task_rewards = {
            task: self._make(reward, options.get(reward, {}) if isinstance(reward, str) else {})
            for task, reward in mapping.items()
        }

    def _make(self, reward: str | RewardFn, options: dict[str, Any]) -> RewardFn:
        if not isinstance(reward, str):
            return GuardedReward(reward, on_error=self.on_error)
        if registry.is_builtin(reward):
            return registry.build(reward, on_error=self.on_error, **options)
        return GuardedReward(registry.get(reward), reward, on_error=self.on_error)

    @property
    def __name__(self) -> str:
        return self.name

    @property
    def errors(self) -> int:
        """Samples scored 0 by a component under ``on_error="zero"``."""
        parts = (self.format, self.answer_format, *self.task_rewards.values())
        return sum(getattr(r, "errors", 0) for r in parts)

    def __repr__(self) -> str:
        return (
            f"Invert4TVGReward(weights={self.weights}, inversion={self.inversion!r}, "
            f"inversion_format={self.inversion_format!r}, on_error={self.on_error!r})"
        )

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        return list(self.score(completions, **columns).total)

    def score(self, completions: Sequence[Any], **columns: Any) -> RewardBreakdown:
        """The totals and the per-component scores of a (mixed-task) batch."""
        n = len(completions)
        tasks = columns.get("task")
        if tasks is None:
            raise MissingColumnError(self.name, "task", [k for k, v in columns.items() if v is not None])
        if isinstance(tasks, str) or len(tasks) != n:
            raise ColumnLengthError(self.name, "task", 1 if isinstance(tasks, str) else len(tasks), n)
        for i, task in enumerate(tasks):
            if task not in self.task_rewards:
                raise RewardError(
                    self.name, f"sample {i}: unknown task {task!r}; known: {', '.join(self.task_rewards)}"
                )
        components: dict[str, list[float | None]] = {"format": self.format(completions, **columns)}
        if self.inversion_format == "answer_only":
            inverse = [i for i in range(n) if tasks[i] in INVERSION_TASKS]
            if inverse:
                answer_only = _call_subset(self.answer_format, inverse, completions, columns)
                for i, value in zip(inverse, answer_only):
                    components["format"][i] = value
        for task, reward in self.task_rewards.items():
            indices = [i for i in range(n) if tasks[i] == task]
            scores: list[float | None] = [None] * n
            if indices:
                for i, value in zip(indices, _call_subset(reward, indices, completions, columns)):
                    scores[i] = value
            components[self.slots[task]] = scores
        total = []
        for i in range(n):
            fmt = components["format"][i] or 0.0
            task_score = components[self.slots[tasks[i]]][i] or 0.0
            total.append(self.weights["format"] * fmt + self.weights[self.slots[tasks[i]]] * task_score)
        return RewardBreakdown(total, components)


def _call_subset(
    reward: RewardFn, indices: list[int], completions: Sequence[Any], columns: Mapping[str, Any]
):
    """Call ``reward`` on the samples at ``indices``; errors report the index in the full batch."""
    n = len(completions)
    sub = {
        k: [v[i] for i in indices] if isinstance(v, (list, tuple)) and len(v) == n else v
        for k, v in columns.items()
    }
    try:
        return reward([completions[i] for i in indices], **sub)
    except RewardSampleError as err:
        raise RewardSampleError(err.reward, indices[err.index], err.cause) from err.cause
