"""Write a synthetic benchmark: videos, per-split annotations, per-event details, metadata and a README.

Layout of ``out_dir``::

    videos/<video_id>.mp4   H.264, yuv420p
    train.json val.json test.json   {video_id: {"duration", "timestamps": [[s, e], ...], "sentences": [...]}}
    events.jsonl            one line per video: objects, actions with spans, and which action each query names
    metadata.json README.md how it was generated (seed, version, config, counts)

Video ``i`` depends only on ``(seed, i, config)``: the same benchmark comes out whatever the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from invert4tvg import __version__
from invert4tvg.data.synthetic.actions import PAIRS
from invert4tvg.data.synthetic.language import ORDINALS, activity_query, ordinal_query
from invert4tvg.data.synthetic.render import write_video
from invert4tvg.data.synthetic.scene import plan_scene
from invert4tvg.data.synthetic.synth_config import SynthConfig

GENERATOR_VERSION = 3  # 2: *_activity.json, the wording and queries options; 3: *_ordinal.json
SPLITS = ("train", "val", "test")


def assign_splits(num_videos: int, seed: int, fractions: tuple[float, float, float]) -> list[str]:
    """Split of each video index: a seeded shuffle cut at the given fractions (val/test get one video each
    whenever their fraction is positive and there are at least three videos)."""
    counts = [round(num_videos * f) for f in fractions[1:]]
    for k, f in enumerate(fractions[1:]):
        if f > 0 and counts[k] == 0 and num_videos >= 3:
            counts[k] = 1
    n_train = max(num_videos - sum(counts), 0)
    order = np.random.default_rng([seed, num_videos, 7]).permutation(num_videos)
    labels = ["train"] * n_train + ["val"] * counts[0] + ["test"] * counts[1]
    out = [""] * num_videos
    for position, index in enumerate(order):
        out[int(index)] = labels[position]
    return out


def _make_video(job: tuple[int, int, SynthConfig, str]) -> dict[str, Any]:
    index, seed, cfg, video_dir = job
    scene = plan_scene(index, seed, cfg)
    write_video(scene, cfg, Path(video_dir) / f"{scene.video_id}.mp4")
    return {
        "index": index,
        "video_id": scene.video_id,
        "duration": scene.duration,
        "objects": [
            {
                "colour": o.colour,
                "shape": o.shape,
                "starts_visible": o.initial.present,
                "actions": [
                    {"action": e.action, "start": e.start, "end": e.end, **_public(e.params)}
                    for e in o.events
                ],
            }
            for o in scene.objects
        ],
        "queries": [
            {"sentence": q.sentence, "start": q.start, "end": q.end, "object": q.object, "actions": q.actions}
            for q in scene.queries
        ],
        "activity": _activity(scene, seed, index),
        "ordinal": _ordinal(scene, seed, index),
    }


def _activity(scene, seed: int, index: int) -> list[dict[str, Any]]:
    """One "when does X change at all" question per acting object (its own RNG: the main queries stay as they were)."""
    rng = np.random.default_rng([seed, index, 11])
    return [
        {
            "sentence": activity_query(o.colour, o.shape, rng),
            "start": o.events[0].start,
            "end": o.events[-1].end,
        }
        for o in scene.objects
        if o.events
    ]


def _ordinal(scene, seed: int, index: int) -> list[dict[str, Any]]:
    """One "when does X change for the k-th time" question per action (own RNG, as ``_activity``)."""
    rng = np.random.default_rng([seed, index, 12])
    return [
        {"sentence": ordinal_query(o.colour, o.shape, k, rng), "start": e.start, "end": e.end}
        for o in scene.objects
        for k, e in enumerate(o.events[: len(ORDINALS)])
    ]


def _public(params: dict[str, Any]) -> dict[str, Any]:
    return {"side": params["side"]} if "side" in params else {}


def _pairs_done(video: dict[str, Any]) -> bool:
    return any({a, b} <= {e["action"] for e in obj["actions"]} for obj in video["objects"] for a, b in PAIRS)


def generate_benchmark(
    out_dir: str | os.PathLike[str],
    num_videos: int,
    seed: int,
    config: SynthConfig | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Generate ``num_videos`` videos into ``out_dir`` and return it. ``workers`` defaults to min(2, CPUs).

    Refuses to write over an existing benchmark unless ``overwrite`` (which first removes its videos).
    """
    cfg = config or SynthConfig()
    if num_videos < 1:
        raise ValueError(f"num_videos must be >= 1, got {num_videos}")
    out = Path(out_dir)
    if (out / "metadata.json").exists():
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds a benchmark; pass overwrite=True (--overwrite) to replace it"
            )
        shutil.rmtree(out / "videos", ignore_errors=True)
    video_dir = out / "videos"
    video_dir.mkdir(parents=True, exist_ok=True)

    jobs = [(i, seed, cfg, str(video_dir)) for i in range(num_videos)]
    workers = max(1, min(workers or min(2, os.cpu_count() or 1), num_videos))
    if num_videos < 8:
        workers = 1  # starting worker processes costs more than a handful of videos
    results: list[dict[str, Any]] = [{}] * num_videos
    bar = tqdm(total=num_videos, desc="synth videos", unit="video", disable=not progress)
    if workers == 1:
        for job in jobs:
            results[job[0]] = _make_video(job)
            bar.update()
    else:
        # spawn: safe whatever threads the caller runs (a forked torch/tokenizers process can deadlock).
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for result in pool.imap_unordered(_make_video, jobs, chunksize=4):
                results[result["index"]] = result
                bar.update()
    bar.close()

    splits = assign_splits(num_videos, seed, cfg.split)
    annotations: dict[str, dict[str, Any]] = {s: {} for s in SPLITS}
    activity: dict[str, dict[str, Any]] = {s: {} for s in SPLITS}
    ordinal: dict[str, dict[str, Any]] = {s: {} for s in SPLITS}
    with open(out / "events.jsonl", "w") as fh:
        for video, split in zip(results, splits):
            for table, key in ((annotations, "queries"), (activity, "activity"), (ordinal, "ordinal")):
                if video[key] or key == "queries":
                    table[split][video["video_id"]] = {
                        "duration": video["duration"],
                        "timestamps": [[q["start"], q["end"]] for q in video[key]],
                        "sentences": [q["sentence"] for q in video[key]],
                    }
            fh.write(json.dumps({"split": split, **{k: v for k, v in video.items() if k != "index"}}) + "\n")
    for split in SPLITS:
        (out / f"{split}.json").write_text(json.dumps(annotations[split], indent=1) + "\n")
        (out / f"{split}_activity.json").write_text(json.dumps(activity[split], indent=1) + "\n")
        (out / f"{split}_ordinal.json").write_text(json.dumps(ordinal[split], indent=1) + "\n")

    metadata = _metadata(results, splits, seed, cfg)
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    (out / "README.md").write_text(_readme(metadata))
    return out


def _metadata(
    results: list[dict[str, Any]], splits: list[str], seed: int, cfg: SynthConfig
) -> dict[str, Any]:
    counts = {
        s: {
            "videos": sum(1 for x in splits if x == s),
            "queries": sum(len(v["queries"]) for v, x in zip(results, splits) if x == s),
            "two_verb_queries": sum(
                sum(len(q["actions"]) == 2 for q in v["queries"]) for v, x in zip(results, splits) if x == s
            ),
        }
        for s in SPLITS
    }
    actions = Counter(e["action"] for v in results for o in v["objects"] for e in o["actions"])
    durations = [v["duration"] for v in results]
    return {
        "generator": "invert4tvg.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "invert4tvg_version": __version__,
        "seed": seed,
        "num_videos": len(results),
        "splits": counts,
        "videos_with_both_actions_of_a_pair": sum(_pairs_done(v) for v in results),
        "actions": dict(sorted(actions.items())),
        "duration_seconds": {"min": min(durations), "mean": float(np.mean(durations)), "max": max(durations)},
        "config": cfg.to_dict(),
    }


def _readme(meta: dict[str, Any]) -> str:
    cfg = meta["config"]
    rows = "\n".join(
        f"| {s} | {c['videos']} | {c['queries']} | {c['two_verb_queries']} |"
        for s, c in meta["splits"].items()
    )
    return f"""# Synthetic temporal grounding benchmark

Generated by `invert4tvg synth` (generator version {meta["generator_version"]}, invert4tvg
{meta["invert4tvg_version"]}) with seed {meta["seed"]}: {meta["num_videos"]} videos of
{cfg["width"]}x{cfg["height"]} pixels at {cfg["fps"]} fps, {cfg["duration"][0]:g}-{cfg["duration"][1]:g} s long.
Coloured shapes perform actions over labelled spans; in {meta["videos_with_both_actions_of_a_pair"]} videos one
object performs both members of a pair (grow/shrink, appear/disappear, enter/leave, move left/right, rise/fall,
open/close), which look alike frame by frame and differ only in the direction of change.

| split | videos | queries | two-verb queries |
|---|---|---|---|
{rows}

- `videos/`: H.264 mp4 files.
- `train.json`, `val.json`, `test.json`: `{{video_id: {{"duration", "timestamps": [[start, end], ...],
  "sentences": [...]}}}}`, times in seconds.
- `*_activity.json`: per split, one "the X changes" query per acting object whose span runs from its first
  action's start to its last action's end (a temporal question other than the benchmark's, for warm starts).
- `*_ordinal.json`: per split, one "the X changes for the second time" query per action, its span that action's
  (one action's boundaries without naming the action: the lookalike warm start's grounding question).
- `events.jsonl`: every object and action with its span, and which actions each query names.
- `metadata.json`: the full generator configuration and counts.

Load a split with
`invert4tvg.data.formats.load_records("tvg-json", "train.json", video_dir="videos", source="synthetic")`
or check it with `invert4tvg data check --format tvg-json --annotations train.json --video-dir videos`.
The same seed and configuration regenerate the same benchmark.
"""
