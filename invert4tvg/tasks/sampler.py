"""Which task each training iteration optimises (seed paper sec. 2.4, eq. 13 and Algorithm 1).

With probability ``p`` an iteration is plain grounding ("tvg", IoU + format rewards); otherwise one inversion task,
drawn by weight (uniform by default), is used for the whole iteration. ``p = 1`` is the Time-R1 baseline; any subset
of inversion tasks gives the paper's Only-VC, AR+VD, ... ablations. ``mode="per_sample"`` draws every sample
independently instead (a mixed batch, which the ``invert4tvg`` reward scores in one call).
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from invert4tvg.data.frames import VideoSampling
from invert4tvg.data.records import GroundingRecord
from invert4tvg.tasks.instances import TaskInstance, build_task_instance
from invert4tvg.tasks.masking import TaskUnavailable, warm
from invert4tvg.tasks.prompts import INVERSION_TASKS, PromptTemplates

MODES = ("per_iteration", "per_sample")
_STATE_VERSION = 1


class TaskSampler:
    """Draws task names for an iteration and builds task instances, falling back to "tvg" where needed.

    ``fallbacks`` counts, per requested task, the records that could not make it (no verb in the query, empty
    clip) and were turned into "tvg" instances instead; ``counts`` counts the tasks drawn.
    """

    def __init__(
        self,
        p: float = 0.8,
        invert_tasks: Sequence[str] = INVERSION_TASKS,
        weights: Sequence[float] | Mapping[str, float] | None = None,
        mode: str = "per_iteration",
        seed: int = 0,
    ) -> None:
        if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        if isinstance(invert_tasks, str):
            invert_tasks = (invert_tasks,)
        tasks = tuple(invert_tasks)
        unknown = [t for t in tasks if t not in INVERSION_TASKS]
        if unknown or len(set(tasks)) != len(tasks):
            raise ValueError(f"invert_tasks must be distinct names from {INVERSION_TASKS}, got {list(tasks)}")
        if not tasks and p < 1.0:
            raise ValueError("p < 1 needs at least one inversion task")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.p = float(p)
        self.invert_tasks = tasks
        self.weights = _normalise_weights(tasks, weights)
        self.mode = mode
        self.seed = int(seed)
        task_seed, mask_seed = np.random.SeedSequence(self.seed).spawn(2)
        self._rng = np.random.default_rng(task_seed)
        self._mask_rng = np.random.default_rng(mask_seed)  # separate, so masking never shifts the task draws
        self.counts: Counter[str] = Counter()
        self.fallbacks: Counter[str] = Counter()
        self.iterations = 0

    def __repr__(self) -> str:
        return (
            f"TaskSampler(p={self.p}, invert_tasks={self.invert_tasks}, weights={self.weights}, "
            f"mode={self.mode!r}, seed={self.seed})"
        )

    def _inversion(self, size: int | None = None) -> Any:
        return self._rng.choice(len(self.invert_tasks), size=size, p=self.weights)

    def draw(self, n: int) -> list[str]:
        """Task names for the ``n`` samples of one iteration."""
        if n < 0:
            raise ValueError("n must be non-negative")
        self.iterations += 1
        if self.mode == "per_iteration":
            if self._rng.random() < self.p:
                tasks = ["tvg"] * n
            else:
                tasks = [self.invert_tasks[int(self._inversion())]] * n
        else:
            use_tvg = self._rng.random(n) < self.p
            picks = self._inversion(n) if self.invert_tasks else np.zeros(n, dtype=int)
            tasks = ["tvg" if t else self.invert_tasks[int(k)] for t, k in zip(use_tvg, picks)]
        self.counts.update(tasks)
        return tasks

    def make_instances(
        self,
        records: Sequence[GroundingRecord],
        tasks: Sequence[str],
        *,
        sampling: VideoSampling | None = None,
        templates: PromptTemplates | None = None,
        mask: str = "all",
    ) -> list[TaskInstance]:
        """One instance per (record, task); a record that cannot make its task becomes "tvg" (counted)."""
        if len(records) != len(tasks):
            raise ValueError(f"{len(records)} records but {len(tasks)} tasks")
        warm([r.query for r, t in zip(records, tasks) if t != "tvg"])
        instances = []
        for record, task in zip(records, tasks):
            try:
                instance = build_task_instance(record, task, sampling, templates, mask, self._mask_rng)
            except TaskUnavailable:
                self.fallbacks[task] += 1
                instance = build_task_instance(record, "tvg", sampling, templates)
            instances.append(instance)
        return instances

    def sample(self, records: Sequence[GroundingRecord], **options: Any) -> list[TaskInstance]:
        """``make_instances(records, draw(len(records)))``."""
        return self.make_instances(records, self.draw(len(records)), **options)

    def config(self) -> dict[str, Any]:
        return {
            "p": self.p,
            "invert_tasks": list(self.invert_tasks),
            "weights": list(self.weights),
            "mode": self.mode,
            "seed": self.seed,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the exact same sequence of draws (plain Python types)."""
        return {
            "version": _STATE_VERSION,
            "config": self.config(),
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            "mask_rng": copy.deepcopy(self._mask_rng.bit_generator.state),
            "counts": dict(self.counts),
            "fallbacks": dict(self.fallbacks),
            "iterations": self.iterations,
        }

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Restore a ``state_dict``. With ``strict`` (default), a different configuration raises."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported TaskSampler state version {state.get('version')!r}")
        if strict:
            saved, current = dict(state["config"]), self.config()
            if not _same_config(saved, current):
                raise ValueError(f"TaskSampler config differs from the checkpoint's: {saved} != {current}")
        self._rng.bit_generator.state = copy.deepcopy(state["rng"])
        self._mask_rng.bit_generator.state = copy.deepcopy(state["mask_rng"])
        self.counts = Counter(state.get("counts", {}))
        self.fallbacks = Counter(state.get("fallbacks", {}))
        self.iterations = int(state.get("iterations", 0))


def _normalise_weights(
    tasks: tuple[str, ...], weights: Sequence[float] | Mapping[str, float] | None
) -> tuple:
    if not tasks:
        return ()
    if weights is None:
        values = [1.0] * len(tasks)
    elif isinstance(weights, Mapping):
        extra = sorted(set(weights) - set(tasks))
        if extra:
            raise ValueError(f"weights for tasks not in invert_tasks: {extra}")
        values = [float(weights.get(t, 0.0)) for t in tasks]
    else:
        values = [float(w) for w in weights]
        if len(values) != len(tasks):
            raise ValueError(f"{len(values)} weights for {len(tasks)} inversion tasks")
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {values}")
    total = sum(values)
    return tuple(v / total for v in values)


def _same_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def normal(config: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in config.items()}
        out["weights"] = [round(float(w), 12) for w in out.get("weights", [])]
        return out

    return normal(a) == normal(b)
