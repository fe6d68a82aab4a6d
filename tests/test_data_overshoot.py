"""Ground-truth spans that end after the video (issue 18, items 5-6): evaluation keeps every published query as
published and counts the overshoots; training clips or drops them, counted; `data check` shows the counts; the
clipped IoU clips the ground truth as it clips the prediction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_fixtures import write_json

import rewards
from invert4tvg.builders import load_split
from invert4tvg.cli import main
from invert4tvg.config import DataArguments
from invert4tvg.data.formats import DataError, load_records

# Real Charades-STA looks like this: the annotated end lies past the csv's video length, by a little or by several
# seconds (the lengths are rounded and some annotations run to the end of a longer original).
CHARADES_LINES = [
    "AAAAA 0.0 6.9##person opens the door.",  # inside
    "AAAAA 20.1 30.4##person walks out.",  # 0.4 s past the 30 s video: within the 1 s tolerance
    "AAAAA 24.0 33.5##person sits on the bed.",  # 3.5 s past: beyond the tolerance
    "BBBBB 3.0 12.0##person drinks from a cup.",  # 2 s past a 10 s video
    "BBBBB 11.0 14.0##person laughs.",  # starts after the video ends
]
DURATIONS = "AAAAA 30.0\nBBBBB 10.0\n"


def charades(tmp_path: Path) -> tuple[Path, Path]:
    ann = tmp_path / "charades_sta_test.txt"
    ann.write_text("\n".join(CHARADES_LINES) + "\n")
    durations = tmp_path / "durations.txt"
    durations.write_text(DURATIONS)
    return ann, durations


def tvg_json(tmp_path: Path) -> Path:
    return write_json(
        tmp_path / "charades_test.json",
        {
            "AAAAA": {
                "duration": 30.0,
                "timestamps": [[0.0, 6.9], [20.1, 30.4], [24.0, 33.5]],
                "sentences": ["person opens the door.", "person walks out.", "person sits on the bed."],
            },
            "BBBBB": {
                "duration": 10.0,
                "timestamps": [[3.0, 12.0], [11.0, 14.0]],
                "sentences": ["person drinks from a cup.", "person laughs."],
            },
        },
    )


@pytest.fixture(params=["charades-sta", "tvg-json"])
def dataset(request, tmp_path):
    if request.param == "charades-sta":
        ann, durations = charades(tmp_path)
        return "charades-sta", ann, durations
    return "tvg-json", tvg_json(tmp_path), None


def test_keep_scores_every_published_query_as_published(dataset):
    fmt, ann, durations = dataset
    result = load_records(fmt, ann, durations=durations, on_error="raise", overshoot="keep")
    spans = [(r.start, r.end) for r in result.records]
    assert spans == [(0.0, 6.9), (20.1, 30.4), (24.0, 33.5), (3.0, 12.0), (11.0, 14.0)]
    over = result.report["overshoot"]
    assert over["policy"] == "keep" and over["spans_past_end"] == 4 and over["kept_as_published"] == 4
    assert over["spans_past_end_beyond_tolerance"] == 3 and over["max_seconds_past_end"] == 4.0
    assert result.report["skipped"] == 0 and result.report["clipped"] == 0


def test_clip_clips_every_overshoot_and_drops_only_spans_outside_the_video(dataset):
    fmt, ann, durations = dataset
    result = load_records(fmt, ann, durations=durations, on_error="skip", overshoot="clip")
    assert [(r.start, r.end) for r in result.records] == [(0.0, 6.9), (20.1, 30.0), (24.0, 30.0), (3.0, 10.0)]
    assert result.report["skipped_by_reason"] == {"end_not_after_start": 1}
    over = result.report["overshoot"]
    assert over["spans_past_end"] == 3 and over["clipped"] == 3 and over["dropped"] == 0


def test_drop_is_the_default_and_counts_what_it_drops(dataset):
    fmt, ann, durations = dataset
    result = load_records(fmt, ann, durations=durations, on_error="skip")
    assert [(r.start, r.end) for r in result.records] == [(0.0, 6.9), (20.1, 30.0)]
    assert result.report["skipped_by_reason"] == {"span_beyond_duration": 3}
    over = result.report["overshoot"]
    assert (over["policy"], over["spans_past_end"], over["clipped"], over["dropped"]) == ("drop", 1, 1, 3)
    assert over["max_seconds_past_end"] == 4.0  # the largest overshoot read, dropped ones included
    with pytest.raises(DataError, match=r"span_beyond_duration.*overshoot='clip'"):
        load_records(fmt, ann, durations=durations)


def test_unknown_policy_is_refused(dataset):
    fmt, ann, durations = dataset
    with pytest.raises(ValueError, match="overshoot must be one of drop, clip, keep"):
        load_records(fmt, ann, durations=durations, overshoot="trim")


def test_evaluation_splits_keep_the_ground_truth_and_training_follows_the_config(tmp_path):
    ann = tvg_json(tmp_path)
    data = DataArguments(dataset_format="tvg-json", train_annotations=str(ann), test_annotations=str(ann))
    test = load_split(data, "test")  # on_bad_record is "raise": nothing may be rejected for overshooting
    assert len(test) == 5 and max(r.end for r in test) == 33.5
    data.on_bad_record = "skip"
    assert len(load_split(data, "train")) == 2  # span_overshoot "drop"
    data.span_overshoot = "clip"
    assert [r.end for r in load_split(data, "train")] == [6.9, 30.0, 30.0, 10.0]


def test_data_check_shows_the_counts(tmp_path, capsys):
    ann, durations = charades(tmp_path)
    base = [
        "data",
        "check",
        "--format",
        "charades-sta",
        "--annotations",
        str(ann),
        "--durations",
        str(durations),
    ]
    assert main(base) == 1  # drop: three rejected samples
    captured = capsys.readouterr()
    assert json.loads(captured.out)["overshoot"]["dropped"] == 3
    assert "4 span(s) end after their video (up to 4 s; 3 by more than 1 s)" in captured.err
    assert "dropped 3" in captured.err and "evaluation keeps them all" in captured.err
    assert main([*base, "--overshoot", "keep"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["records"] == 5 and report["overshoot"]["kept_as_published"] == 4
    assert "kept 4 as published" in captured.err


def test_clipped_iou_clips_the_ground_truth_too():
    """A perfect answer on a span that ends past the video scores 1, not 25/27 (issue 18, item 6)."""
    iou = rewards.build("iou", clip=True)
    cols = {"start": [5.0, 5.0, 5.0], "end": [32.0, 32.0, 32.0], "duration": [30.0, 30.0, 30.0]}
    texts = [f"<think>t</think><answer>{a}</answer>" for a in ("5 to 32", "5 to 30", "5 to 17.5")]
    assert iou(texts, **cols) == pytest.approx([1.0, 1.0, 0.5])
    # Without clipping both stay as they are (the public code's behaviour).
    assert rewards.build("iou")(texts, **cols) == pytest.approx([1.0, 25 / 27, 12.5 / 27])
    composite = rewards.build("invert4tvg", iou_clip=True)
    assert composite(texts[1:2], task=["tvg"], start=[5.0], end=[32.0], duration=[30.0]) == [2.0]
