"""Evaluation metrics for temporal video grounding and the inversion (action-understanding) tasks.

Pure functions over per-sample values; everything returned is in percent (0-100).

Grounding: ``R1@m`` is the share of samples whose top-1 predicted span has IoU >= m with the ground truth
(``strict=True``: IoU > m, Time-R1's convention); ``mIoU`` is the mean IoU. A parse failure (no span could be read
from the model's answer) scores IoU 0 and is counted, never dropped: dropping it would reward a model for failing
to answer.

Threshold ties and float tolerance: an IoU is a ratio of float differences, so a span that is exactly at the
threshold in decimal arithmetic can land one ulp either side of it (``(3.6 - 0.0) / 12.0`` is ``0.30000000000000004``).
We treat IoUs within ``IOU_TIE_TOLERANCE`` (1e-9) of a threshold as equal to it: ``strict=False`` counts them,
``strict=True`` does not. This never merges genuinely different values for annotation-style times: with times given
to 0.01 s and spans under 1000 s, IoU is a fraction with denominator <= 1e5, so a non-tie sits at least 1e-6 away
from 0.3, 0.5 or 0.7.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rewards import SPAN_PARSERS, temporal_iou
from rewards.base import INVERSION_TASKS

THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)
IOU_TIE_TOLERANCE = 1e-9
# Keys of metrics.json, in display order.
GROUNDING_KEYS: tuple[str, ...] = (*(f"R1@{m}" for m in THRESHOLDS), "mIoU")
ACTION_KEYS: tuple[str, ...] = tuple(t.upper() for t in INVERSION_TASKS)
METRIC_KEYS: tuple[str, ...] = GROUNDING_KEYS + ACTION_KEYS


def recall_key(m: float) -> str:
    """``R1@0.5``-style key for threshold ``m``."""
    return f"R1@{m:g}"


def _iou_value(iou: float | None, index: int) -> float:
    """IoU as a float in [0, 1]; ``None`` (parse failure) is 0. Out-of-range values are a caller bug."""
    if iou is None:
        return 0.0
    value = float(iou)
    if math.isnan(value) or value < -IOU_TIE_TOLERANCE or value > 1.0 + IOU_TIE_TOLERANCE:
        raise ValueError(f"IoU of sample {index} is {iou!r}, expected a value in [0, 1] or None")
    return min(max(value, 0.0), 1.0)


def hits_threshold(iou: float | None, m: float, strict: bool = False) -> bool:
    """Whether one sample counts towards ``R1@m`` (see the module docstring for the tie tolerance)."""
    value = _iou_value(iou, 0)
    if strict:
        return value > m + IOU_TIE_TOLERANCE
    return value >= m - IOU_TIE_TOLERANCE


def recall_at(ious: Sequence[float | None], m: float, strict: bool = False) -> float:
    """``R1@m`` in percent; ``None`` entries are parse failures (IoU 0). Empty input is an error."""
    if not ious:
        raise ValueError("recall_at needs at least one sample")
    values = [_iou_value(v, i) for i, v in enumerate(ious)]
    if strict:
        hits = sum(v > m + IOU_TIE_TOLERANCE for v in values)
    else:
        hits = sum(v >= m - IOU_TIE_TOLERANCE for v in values)
    return 100.0 * hits / len(values)


def mean_iou(ious: Sequence[float | None]) -> float:
    """mIoU in percent, parse failures counted as 0."""
    if not ious:
        raise ValueError("mean_iou needs at least one sample")
    return 100.0 * sum(_iou_value(v, i) for i, v in enumerate(ious)) / len(ious)


def grounding_metrics(
    ious: Sequence[float | None],
    parse_failures: Sequence[bool] | None = None,
    strict: bool = False,
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict[str, Any]:
    """R1@m for each threshold and mIoU (percent), plus ``samples`` and ``parse_failures`` counts.

    ``parse_failures[i]`` marks sample ``i`` as unparseable; when omitted, ``None`` IoUs are the failures.
    A failure's IoU must be ``None`` or 0 (it scores 0 either way).
    """
    if parse_failures is None:
        parse_failures = [v is None for v in ious]
    if len(parse_failures) != len(ious):
        raise ValueError(f"{len(ious)} IoUs but {len(parse_failures)} parse-failure flags")
    for i, (iou, failed) in enumerate(zip(ious, parse_failures)):
        if failed and iou not in (None, 0, 0.0):
            raise ValueError(f"sample {i} is a parse failure but has IoU {iou!r} (expected None or 0)")
    out: dict[str, Any] = {recall_key(m): recall_at(ious, m, strict) for m in thresholds}
    out["mIoU"] = mean_iou(ious)
    out["samples"] = len(ious)
    out["parse_failures"] = int(sum(bool(f) for f in parse_failures))
    return out


def per_source_metrics(
    ious: Sequence[float | None],
    sources: Sequence[str],
    strict: bool = False,
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict[str, dict[str, Any]]:
    """:func:`grounding_metrics` for each source dataset (keys sorted), for splits that mix datasets."""
    if len(sources) != len(ious):
        raise ValueError(f"{len(ious)} IoUs but {len(sources)} sources")
    grouped: dict[str, list[float | None]] = {}
    for iou, source in zip(ious, sources):
        grouped.setdefault(str(source), []).append(iou)
    return {s: grounding_metrics(v, strict=strict, thresholds=thresholds) for s, v in sorted(grouped.items())}


def accuracy(rewards: Iterable[float | None]) -> tuple[float | None, int]:
    """Accuracy in percent over scored samples, and how many were scored.

    ``None`` means the task was not run on that sample (e.g. the query had no verb to mask) and is left out.
    Rewards are the inversion tasks' 0/1 rewards; values in between (a graded reward) average as they are.
    Returns ``(None, 0)`` when nothing was scored.
    """
    scored: list[float] = []
    for i, r in enumerate(rewards):
        if r is None:
            continue
        value = float(r)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"reward of sample {i} is {r!r}, expected a value in [0, 1] or None")
        scored.append(value)
    if not scored:
        return None, 0
    return 100.0 * sum(scored) / len(scored), len(scored)


def action_metrics(rewards_by_task: Mapping[str, Iterable[float | None]]) -> dict[str, Any]:
    """VC / AR / VD accuracy (percent, ``None`` when the task was not evaluated) and their counts.

    Returns ``{"VC": .., "AR": .., "VD": .., "counts": {"vc": n, "ar": n, "vd": n}}``.
    """
    unknown = set(rewards_by_task) - set(INVERSION_TASKS)
    if unknown:
        raise ValueError(
            f"unknown action task(s) {sorted(unknown)}; expected some of {list(INVERSION_TASKS)}"
        )
    out: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for task in INVERSION_TASKS:
        acc, n = accuracy(rewards_by_task.get(task, ()))
        out[task.upper()] = acc
        counts[task] = n
    out["counts"] = counts
    return out


def metrics_from_predictions(rows: Sequence[Mapping[str, Any]], strict: bool = False) -> dict[str, Any]:
    """The metric part of ``metrics.json`` from ``predictions.jsonl`` rows (everything but ``metadata``).

    A row is a parse failure when its ``pred`` is null. ``per_source`` is filled when rows come from several
    sources.
    """
    if not rows:
        raise ValueError("no predictions to score")
    ious: list[float | None] = []
    failures: list[bool] = []
    sources: list[str] = []
    task_rewards: dict[str, list[float | None]] = {t: [] for t in INVERSION_TASKS}
    for i, row in enumerate(rows):
        failed = row.get("pred") is None
        iou = row.get("iou")
        ious.append(None if failed else iou)
        failures.append(failed)
        if not failed and iou is None:
            raise ValueError(f"prediction {i} (id {row.get('id')!r}) has a span but no IoU")
        sources.append(str(row.get("source") or "unknown"))
        tasks = row.get("tasks") or {}
        for task in INVERSION_TASKS:
            result = tasks.get(task)
            task_rewards[task].append(None if result is None else result.get("reward"))
    grounding = grounding_metrics(ious, failures, strict=strict)
    action = action_metrics(task_rewards)
    out: dict[str, Any] = {k: grounding[k] for k in GROUNDING_KEYS}
    out.update({k: action[k] for k in ACTION_KEYS})
    out["strict"] = strict
    out["counts"] = {
        "samples": grounding["samples"],
        "parse_failures": grounding["parse_failures"],
        **action["counts"],
    }
    by_source = per_source_metrics(ious, sources, strict=strict)
    out["per_source"] = by_source if len(by_source) > 1 else {}
    return out


PARSERS: tuple[str, ...] = tuple(SPAN_PARSERS)  # the iou reward's parser and Time-R1's


def score_output(
    output: str, gt: Sequence[float], parser: str = "answer"
) -> tuple[tuple[float, float] | None, float]:
    """Parse a model answer and score it against ``gt``: ``(pred span or None, IoU)``.

    ``parser="answer"`` (the default) is the ``iou`` reward's parser, so evaluation and training read answers the
    same way; ``"time-r1"`` reads them as Time-R1's public evaluation does (the last "A to B" anywhere in the
    output), to reproduce published numbers. The two give different numbers on the same outputs.
    """

    if parser not in SPAN_PARSERS:
        raise ValueError(f"unknown parser {parser!r}; choose from {', '.join(SPAN_PARSERS)}")
    pred = SPAN_PARSERS[parser](output)
    if pred is None:
        return None, 0.0
    return (float(pred[0]), float(pred[1])), float(temporal_iou(pred, (float(gt[0]), float(gt[1]))))


@dataclass(frozen=True)
class SeedStats:
    """A metric aggregated over seeds. ``std`` is the sample standard deviation (n-1); ``None`` for n < 2."""

    mean: float | None
    std: float | None
    n: int

    def format(self, digits: int = 1) -> str:
        if self.mean is None:
            return "–"
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def aggregate_seeds(values: Iterable[float | None]) -> SeedStats:
    """Mean and sample std over seeds, ignoring runs where the metric is missing (``None``)."""
    present = [float(v) for v in values if v is not None]
    n = len(present)
    if n == 0:
        return SeedStats(None, None, 0)
    mean = sum(present) / n
    if n < 2:
        return SeedStats(mean, None, n)
    var = sum((v - mean) ** 2 for v in present) / (n - 1)
    return SeedStats(mean, math.sqrt(var), n)


def aggregate_metrics(
    runs: Sequence[Mapping[str, Any]], keys: Sequence[str] = METRIC_KEYS
) -> dict[str, SeedStats]:
    """:func:`aggregate_seeds` for each metric key across several runs' metrics dicts."""
    return {k: aggregate_seeds(run.get(k) for run in runs) for k in keys}


SUMMARY_KEYS: tuple[str, ...] = ("R1@0.3", "R1@0.5", "R1@0.7", "mIoU", "VC", "AR", "VD")


def summary_line(metrics: Mapping[str, Any]) -> str:
    """One line for people: every metric to one decimal, the parser, the query count and, when some answers did
    not parse, how many (they score IoU 0, so a line of zeros says why)."""
    counts = metrics.get("counts") or {}
    samples = counts.get("samples", 0)
    notes = [f"parser {metrics.get('parser', 'answer')}", f"{samples} queries"]
    failed = counts.get("parse_failures", 0)
    if failed:
        notes.append(f"{failed} of {samples} answers did not parse (IoU 0)")
    past_end = counts.get("gt_past_video_end")
    if past_end:
        notes.append(f"{past_end} ground-truth spans past the video's end")
    values = " ".join(f"{k}={metrics[k]:.1f}" for k in SUMMARY_KEYS if metrics.get(k) is not None)
    return f"{values} ({', '.join(notes)})"
