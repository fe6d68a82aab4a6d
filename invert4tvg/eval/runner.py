"""Evaluate a policy on a split: grounding (R1@m, mIoU) with the TVG prompt on whole videos, and action
understanding (VC / AR / VD accuracy, the paper's Figure 1 right) with the inversion prompts on ground-truth clips.

Generation goes through whichever rollout engine the caller built (greedy by default). Writes
``OUT/predictions.jsonl`` and ``OUT/metrics.json`` (see docs/evaluation.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import rewards
from invert4tvg.data.cache import FrameCache
from invert4tvg.data.frames import VideoSampling
from invert4tvg.data.records import GroundingRecord
from invert4tvg.eval.metrics import (
    INVERSION_TASKS,
    PARSERS,
    grounding_metrics,
    metrics_from_predictions,
    score_output,
    summary_line,
)
from invert4tvg.policy.base import Decoded, Policy
from invert4tvg.rollout.base import Completion, RolloutEngine, SamplingParams
from invert4tvg.tasks import NoVerbError, PromptTemplates, TaskInstance, TaskUnavailable, build_task_instance
from invert4tvg.training.batch_videos import decode_or_skip

logger = logging.getLogger(__name__)


def _generate(
    policy: Policy,
    engine: RolloutEngine,
    instances: Sequence[TaskInstance],
    sampling: SamplingParams,
    cache: FrameCache | None,
    batch_size: int,
    desc: str,
    skipped: dict[str, str],
    progress: bool,
    decoded: dict[str, Decoded | None] | None = None,
) -> dict[str, Completion]:
    """Generate one completion per instance; returns record id -> completion. Unreadable videos are skipped
    and recorded in ``skipped`` (path -> reason). With ``decoded`` (grounding), the head's reading of each
    completion goes there (record id -> span or None), decoded while the chunk's videos are in memory."""
    outputs: dict[str, Completion] = {}
    bar = tqdm(total=len(instances), desc=desc, disable=not progress, leave=False)
    for start in range(0, len(instances), batch_size):
        chunk, videos = [], []
        for inst in instances[start : start + batch_size]:
            video = decode_or_skip(inst, cache, skipped)
            if video is not None:
                chunk.append(inst)
                videos.append(video)
        if chunk:
            requests = [
                policy.rollout_request(i.messages, v, 1, i.record_id, i.task) for i, v in zip(chunk, videos)
            ]
            groups = engine.generate(requests, sampling)
            for inst, group in zip(chunk, groups):
                outputs[inst.record_id] = group[0]
            if decoded is not None:
                durations = [float(i.columns["duration"]) for i in chunk]
                for inst, found in zip(chunk, policy.decode_completions(requests, groups, durations)):
                    decoded[inst.record_id] = found[0]
        bar.update(len(instances[start : start + batch_size]))
    bar.close()
    return outputs


def evaluate(
    policy: Policy,
    engine: RolloutEngine,
    records: Sequence[GroundingRecord],
    out_dir: str | Path | None,
    video_sampling: VideoSampling | None = None,
    templates: PromptTemplates | None = None,
    action_tasks: Sequence[str] = INVERSION_TASKS,
    temperature: float = 0.0,
    max_tokens: int = 256,
    batch_size: int = 16,
    strict: bool = False,
    frame_cache: FrameCache | None = None,
    metadata: dict[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
    parser: str = "answer",
) -> dict[str, Any]:
    """Score ``records``; writes predictions and metrics to ``out_dir`` when given. Returns metrics.json's content.

    ``parser`` reads the predicted span: "answer" (the policy head's ``decode``, what the ``iou`` reward scores in
    training) or "time-r1" (Time-R1's public evaluation of text timestamps, for reproducing published numbers);
    metrics.json records which. Ground-truth spans are scored as given (loaded for evaluation, they are as
    published); those that end after the video are counted.
    """
    if parser not in PARSERS:
        raise ValueError(f"unknown parser {parser!r}; choose from {', '.join(PARSERS)}")
    if parser != "answer" and not policy.answers_in_seconds:
        raise ValueError(
            f"parser {parser!r} reads text timestamps; the {policy.name} head is read by 'answer'"
        )
    video_sampling = video_sampling or VideoSampling()
    templates = templates or PromptTemplates()
    sampling = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed)
    skipped: dict[str, str] = {}
    tvg = [build_task_instance(r, "tvg", video_sampling, templates) for r in records]
    decoded: dict[str, Decoded | None] = {}
    answers = _generate(
        policy, engine, tvg, sampling, frame_cache, batch_size, "eval tvg", skipped, progress, decoded
    )

    by_task: dict[str, dict[str, dict[str, Any]]] = {}
    unavailable: dict[str, int] = {}
    rng = np.random.default_rng(seed)
    for task in action_tasks:
        instances = []
        for record in records:
            try:
                instances.append(build_task_instance(record, task, video_sampling, templates, rng=rng))
            except (NoVerbError, TaskUnavailable):
                unavailable[task] = unavailable.get(task, 0) + 1
        outputs = _generate(
            policy, engine, instances, sampling, frame_cache, batch_size, f"eval {task}", skipped, progress
        )
        scored = [i for i in instances if i.record_id in outputs]
        if not scored:
            by_task[task] = {}
            continue
        columns = {key: [i.columns[key] for i in scored] for key in scored[0].columns}
        scores = rewards.get(task)([outputs[i.record_id].text for i in scored], **columns)
        by_task[task] = {
            i.record_id: {
                "prompt_query": i.columns.get("masked_query") or i.columns["query"],
                "output": outputs[i.record_id].text,
                "reward": score,
            }
            for i, score in zip(scored, scores)
        }

    rows = []
    for record in records:
        if record.id not in answers:
            continue
        gt = (record.start, record.end)
        saliency = None
        if parser == "answer":
            found = decoded[record.id]
            pred = None if found is None else found.span
            iou = 0.0 if pred is None else rewards.temporal_iou(pred, gt)
            saliency = None if found is None else found.saliency
        else:
            pred, iou = score_output(answers[record.id].text, gt, parser)
        row = {
            "id": record.id,
            "video": record.video,
            "query": record.query,
            "duration": record.duration,
            "source": record.source,
            "gt": [record.start, record.end],
            "output": answers[record.id].text,
            "pred": list(pred) if pred is not None else None,
            "iou": iou,
            **({"saliency": saliency} if saliency is not None else {}),
            "tasks": {t: by_task[t][record.id] for t in action_tasks if record.id in by_task.get(t, {})},
        }
        rows.append(row)
    if not rows:
        raise RuntimeError(
            f"no sample could be evaluated: {len(skipped)} unreadable videos, e.g. "
            f"{next(iter(skipped.items()), None)}"
        )
    metrics = metrics_from_predictions(rows, strict=strict)
    metrics["parser"] = parser
    metrics["counts"].update({"skipped_videos": len(skipped), "records": len(records)})
    metrics["counts"]["gt_past_video_end"] = sum(float(r["gt"][1]) > float(r["duration"]) for r in rows)
    metrics["counts"].update({f"{t}_unavailable": n for t, n in unavailable.items()})
    metrics["skipped"] = skipped
    metrics["metadata"] = dict(metadata or {})
    if out_dir is not None:
        write_eval(out_dir, rows, metrics)
    return metrics


def whole_video_metrics(records: Sequence[GroundingRecord], strict: bool = False) -> dict[str, Any]:
    """The trivial baseline that always answers the whole video."""
    ious = [rewards.temporal_iou((0.0, r.duration), (r.start, r.end)) for r in records]
    return grounding_metrics(ious, strict=strict)


def write_eval(out_dir: str | Path, rows: Sequence[dict[str, Any]], metrics: dict[str, Any]) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    logger.info("evaluation written to %s: %s", out, summary_line(metrics))
