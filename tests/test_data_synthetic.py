"""The synthetic benchmark: determinism, labels that match what the decoded video shows, queries, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from invert4tvg.cli import main
from invert4tvg.data.formats import load_records
from invert4tvg.data.synthetic import (
    ACTION_NAMES,
    COLOURS,
    PAIRS,
    PHRASES,
    SynthConfig,
    generate_benchmark,
    plan_scene,
    vocabulary,
)
from invert4tvg.data.video import VideoSampling, VideoSpec, decode_video

# One object on a plain background, four or five actions per video: seed 0 shows all 17 actions in 7 videos.
LABEL_CONFIG = SynthConfig(
    fps=4,
    duration=(20.0, 24.0),
    event_length=(2.5, 4.0),
    distractors=(0, 0),
    events_per_object=(4, 5),
    texture=False,
    absent_start_prob=0.3,
)
EVERY_FRAME = VideoSampling(fps=4.0, min_pixels=4 * 784, total_pixels=10**9)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_benchmark(
        tmp_path_factory.mktemp("synth") / "b", 7, seed=0, config=LABEL_CONFIG, progress=False
    )


def _measure(frames: np.ndarray, colour: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: the object's mask (pixels close to its colour), area, and centroid (x, y)."""
    target = np.asarray(COLOURS[colour], dtype=np.float32)
    masks = np.linalg.norm(frames.astype(np.float32) - target, axis=-1) < 60
    areas = masks.sum(axis=(1, 2)).astype(float)
    ys, xs = np.mgrid[0 : frames.shape[1], 0 : frames.shape[2]]
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (masks * xs).sum(axis=(1, 2)) / areas
        cy = (masks * ys).sum(axis=(1, 2)) / areas
    return masks, areas, np.stack([cx, cy], axis=1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _check_action(action: str, t: np.ndarray, start: float, end: float, measured: tuple, size: int) -> None:
    masks, area, centre = measured
    b = int(np.nonzero(t < start)[0][-1])  # last frame before the action
    a = int(np.nonzero(t >= end)[0][0])  # first frame after it
    during = np.nonzero((t >= start) & (t < end))[0]
    shown = [i for i in during if area[i] > 20]
    moved = centre[a] - centre[b]
    checks = {
        "grow": lambda: area[a] > 1.8 * area[b],
        "shrink": lambda: area[a] < area[b] / 1.8,
        "appear": lambda: area[b] < 5 and area[a] > 50,
        "disappear": lambda: area[b] > 50 and area[a] < 5,
        "enter": lambda: area[b] < 5 and area[a] > 50 and np.linalg.norm(centre[shown[0]] - centre[a]) > 8,
        "leave": lambda: area[b] > 50 and area[a] < 5 and np.linalg.norm(centre[shown[-1]] - centre[b]) > 8,
        "move_left": lambda: moved[0] < -0.2 * size and abs(moved[1]) < 3,
        "move_right": lambda: moved[0] > 0.2 * size and abs(moved[1]) < 3,
        "rise": lambda: moved[1] < -0.2 * size and abs(moved[0]) < 3,
        "fall": lambda: moved[1] > 0.2 * size and abs(moved[0]) < 3,
        "open": lambda: area[a] < 0.92 * area[b],
        "close": lambda: area[a] > 1.08 * area[b],
        "spin": lambda: min(_iou(masks[i], masks[b]) for i in during) < 0.85,
        "bounce": lambda: min(centre[during, 1]) < centre[b, 1] - 0.08 * size and abs(moved[1]) < 2,
        "shake": lambda: max(abs(centre[during, 0] - centre[b, 0])) > 0.04 * size and abs(moved[0]) < 2,
        "blink": lambda: min(area[during]) < 5 and max(area[during]) > 0.8 * area[b],
        "pulse": lambda: max(area[during]) > 1.4 * area[b] and abs(area[a] - area[b]) < 0.15 * area[b],
    }
    assert checks[action](), (
        f"{action} over [{start}, {end}] not visible: area {area[b]}->{area[a]}, moved {moved}"
    )


def test_labelled_actions_are_visible_in_the_decoded_video_and_nowhere_else(labelled: Path) -> None:
    seen = set()
    for line in (labelled / "events.jsonl").read_text().splitlines():
        video = json.loads(line)
        (obj,) = video["objects"]
        decoded = decode_video(
            VideoSpec(str(labelled / "videos" / f"{video['video_id']}.mp4"), sampling=EVERY_FRAME)
        )
        assert decoded.frames.shape[1:3] == (112, 112)
        measured = _measure(decoded.frames, obj["colour"])
        t = decoded.timestamps
        for event in obj["actions"]:
            _check_action(event["action"], t, event["start"], event["end"], measured, 112)
            seen.add(event["action"])
        # Between actions nothing changes: the spans are the only places where something happens.
        bounds = [0.0] + [x for e in obj["actions"] for x in (e["start"], e["end"])] + [video["duration"]]
        for lo, hi in zip(bounds[::2], bounds[1::2]):
            idle = np.nonzero((t >= lo + 0.3) & (t < hi - 0.3))[0]
            if len(idle) > 1:
                area = measured[1][idle]
                assert area.max() - area.min() <= 0.1 * max(area.max(), 10), (video["video_id"], lo, hi)
    assert seen == set(ACTION_NAMES)


def test_annotations_match_the_events_and_name_the_action(labelled: Path) -> None:
    events = {
        json.loads(line)["video_id"]: json.loads(line)
        for line in (labelled / "events.jsonl").read_text().splitlines()
    }
    total = 0
    for split in ("train", "val", "test"):
        for vid, entry in json.loads((labelled / f"{split}.json").read_text()).items():
            video = events[vid]
            assert video["split"] == split and entry["duration"] == video["duration"]
            assert len(entry["timestamps"]) == len(entry["sentences"]) == len(video["queries"])
            for (s, e), sentence, q in zip(entry["timestamps"], entry["sentences"], video["queries"]):
                total += 1
                obj = video["objects"][q["object"]]
                assert f"{obj['colour']} {obj['shape']}" in sentence.lower()
                spans = {a["action"]: (a["start"], a["end"]) for a in obj["actions"]}
                assert (s, e) == (spans[q["actions"][0]][0], spans[q["actions"][-1]][1])
                for action in q["actions"]:
                    phrases = PHRASES[action][0] + PHRASES[action][1]
                    phrases += tuple(p.removeprefix("is ") for p in phrases)
                    assert any(re.search(rf"\b{re.escape(p)}\b", sentence) for p in phrases), (
                        sentence,
                        action,
                    )
    assert total > 20
    records = load_records(
        "tvg-json", labelled / "train.json", video_dir=labelled / "videos", source="synthetic"
    )
    assert records.report["skipped"] == 0 and all(Path(r.video).is_file() for r in records.records)


def test_generation_is_deterministic_per_seed_and_independent_of_workers(tmp_path: Path) -> None:
    cfg = SynthConfig.preset("tiny", duration=(8.0, 9.0))
    one = generate_benchmark(tmp_path / "one", 8, seed=11, config=cfg, workers=1, progress=False)
    two = generate_benchmark(tmp_path / "two", 8, seed=11, config=cfg, workers=2, progress=False)
    other = generate_benchmark(tmp_path / "other", 8, seed=12, config=cfg, workers=1, progress=False)
    for name in ("train.json", "val.json", "test.json", "events.jsonl", "metadata.json", "README.md"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    for video in sorted((one / "videos").iterdir()):
        assert video.read_bytes() == (two / "videos" / video.name).read_bytes(), video.name
    assert (one / "events.jsonl").read_text() != (other / "events.jsonl").read_text()
    meta = json.loads((one / "metadata.json").read_text())
    assert meta["seed"] == 11 and meta["num_videos"] == 8 and meta["config"]["width"] == 56
    assert sum(s["videos"] for s in meta["splits"].values()) == 8 and meta["splits"]["val"]["videos"] >= 1
    with pytest.raises(FileExistsError):
        generate_benchmark(one, 2, seed=11, config=cfg, progress=False)


def test_default_benchmark_is_charades_like_and_needs_action_understanding() -> None:
    cfg = SynthConfig()
    scenes = [plan_scene(i, 3, cfg) for i in range(300)]
    pair_videos = sum(
        any({a, b} <= {e.action for e in obj.events} for a, b in PAIRS for obj in s.objects) for s in scenes
    )
    assert pair_videos > 0.4 * len(scenes)  # the same object does both members of a pair in many videos
    durations = [s.duration for s in scenes]
    assert min(durations) >= 8.0 and max(durations) <= 30.0
    coverage = [(q.end - q.start) / s.duration for s in scenes for q in s.queries]
    assert np.mean(coverage) < 0.35 and max(coverage) < 0.95  # spans of a few seconds, not most of the video
    assert np.mean([len(s.queries) for s in scenes]) >= 3
    assert sum(len(q.actions) == 2 for s in scenes for q in s.queries) > 50
    used = {e.action for s in scenes for o in s.objects for e in o.events}
    assert used == set(ACTION_NAMES) and len({a.split("_")[0] for a in used}) >= 12
    # Every (object, action) is queried once per video, so each query has exactly one right answer.
    for s in scenes:
        assert len({q.sentence for q in s.queries}) == len(s.queries)
        for obj in s.objects:
            assert len({e.action for e in obj.events}) == len(obj.events)


def test_vocabulary_covers_every_generated_word() -> None:
    words = {w for text in vocabulary() for w in re.findall(r"[A-Za-z]+", text)}
    for s in (plan_scene(i, 5, SynthConfig()) for i in range(100)):
        for q in s.queries:
            assert set(re.findall(r"[A-Za-z]+", q.sentence)) <= words, q.sentence


def test_config_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError, match="even"):
        SynthConfig(width=57)
    with pytest.raises(ValueError, match="unknown actions"):
        SynthConfig(actions=("grow", "teleport"))
    with pytest.raises(ValueError, match="cannot hold one event"):
        SynthConfig(duration=(2.0, 3.0))


def test_cli_synth_writes_a_loadable_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench"
    args = [
        "synth",
        "--out",
        str(out),
        "--num-videos",
        "3",
        "--seed",
        "1",
        "--preset",
        "tiny",
        "--max-duration",
        "9",
    ]
    assert main(args) == 0
    assert "synthetic benchmark written" in capsys.readouterr().out
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["config"]["duration"] == [8.0, 9.0] and len(list((out / "videos").glob("*.mp4"))) == 3
    assert (
        main(
            [
                "data",
                "check",
                "--format",
                "tvg-json",
                "--annotations",
                str(out / "train.json"),
                "--video-dir",
                str(out / "videos"),
            ]
        )
        == 0
    )
    assert main(args) == 2  # refuses to overwrite without --overwrite
    assert "--overwrite" in capsys.readouterr().err
