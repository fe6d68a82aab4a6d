"""The rewards a run optimises: TRL's ``reward_funcs`` + ``reward_weights`` over the ``rewards`` registry.

Returns each completion's total (weighted sum; None when no function scored it, as TRL's nansum does) and the
per-component scores that the trainer logs as ``rewards/<name>/mean`` (one entry per reward function, the
``invert4tvg`` composite's total included, plus its components format, iou, vc, ar, vd; named as TRL names it: the registered name, or
the function's name for one given by path, ``module.path:function``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import rewards
from rewards.errors import RewardOutputError


class RewardSet:
    def __init__(
        self,
        names: Sequence[str],
        weights: Sequence[float] | None = None,
        composite_options: dict[str, Any] | None = None,
        on_error: str = "raise",
    ) -> None:
        if not names:
            raise ValueError("reward_funcs is empty: name at least one reward (see `rewards.available()`)")
        if weights is not None and len(weights) != len(names):
            raise ValueError(f"reward_weights has {len(weights)} entries for {len(names)} reward_funcs")
        self.names = list(names)
        self.weights = [float(w) for w in weights] if weights is not None else [1.0] * len(names)
        self.funcs = [
            rewards.build(name, on_error=on_error, **(composite_options or {}))
            if name == "invert4tvg"
            else rewards.build(name, on_error=on_error)
            for name in self.names
        ]

    def __call__(
        self, completions: Sequence[Any], **columns: Any
    ) -> tuple[list[float | None], dict[str, list]]:
        n = len(completions)
        totals: list[float | None] = [None] * n
        components: dict[str, list[float | None]] = {}
        for name, weight, fn in zip(self.names, self.weights, self.funcs):
            if isinstance(fn, rewards.Invert4TVGReward):
                breakdown = fn.score(completions, **columns)
                scores: list[float | None] = list(breakdown.total)
                components.update(breakdown.components)
            else:
                scores = list(fn(completions, **columns))
            components[rewards.registry.display_name(name)] = scores  # TRL's rewards/<name>/mean
            for i, score in enumerate(scores):
                if score is not None:
                    _check_finite(name, i, score, columns)
                    totals[i] = (totals[i] or 0.0) + weight * float(score)
        return totals, components

    @property
    def errors(self) -> int:
        """Samples scored 0 under ``reward_error_policy: zero``."""
        return sum(getattr(fn, "errors", 0) for fn in self.funcs)


def _check_finite(name: str, i: int, score: Any, columns: dict[str, Any]) -> None:
    """Every reward, built-in or not, is a finite number or None: an inf would make its group's std NaN (counted
    as zero-std, advantage 0) and reach metrics.jsonl as Infinity; NaN means "not scored" only as None."""
    try:
        number = float(score)
    except (TypeError, ValueError):
        raise RewardOutputError(name, f"sample {i}: returned {score!r}, not a number") from None
    if not math.isfinite(number):
        record = columns.get("record_id")
        which = (
            f" (record {record[i]!r}, task {columns['task'][i]!r})"
            if record is not None and "task" in columns
            else ""
        )
        raise RewardOutputError(
            name,
            f"sample {i}{which}: returned {number}; a reward must be a finite number (or None: not scored)",
        )
