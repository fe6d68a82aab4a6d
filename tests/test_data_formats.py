"""Dataset loaders and `invert4tvg data check`, on files written here (good and malformed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_fixtures import write_json

from invert4tvg.cli import main
from invert4tvg.commands.data_check import FORMAT_CHOICES
from invert4tvg.data.formats import FORMATS, DataError, load_durations, load_records
from invert4tvg.data.records import GroundingRecord

CHARADES_CSV = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"


def _charades(tmp_path: Path, lines: list[str], durations: dict[str, float]) -> tuple[Path, Path]:
    ann = tmp_path / "charades_sta_train.txt"
    ann.write_text("\n".join(lines) + "\n\n")  # a trailing blank line, as the real files have
    csv = tmp_path / "Charades_v1_train.csv"
    csv.write_text(
        CHARADES_CSV
        + "".join(f'{vid},HR43,Kitchen,6,7,Yes,"a script",,,,{d}\n' for vid, d in durations.items())
    )
    return ann, csv


def _touch_videos(d: Path, names: list[str]) -> Path:
    d.mkdir(exist_ok=True)
    for name in names:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(b"")
    return d


def test_charades_sta_good_file_becomes_records_and_a_dataset(tmp_path: Path) -> None:
    ann, csv = _charades(
        tmp_path,
        ["3MSZA 24.3 30.4##person turn a light on.", "AO8RW 0.0 6.9##a person is putting a book on a shelf."],
        {"3MSZA": 31.25, "AO8RW": 33.67},
    )
    videos = _touch_videos(tmp_path / "Charades_v1_480", ["3MSZA.mp4", "AO8RW.mp4"])
    result = load_records("charades-sta", ann, durations=csv, video_dir=videos)
    first = result.records[0]
    assert first == GroundingRecord(
        "3MSZA_1",
        "3MSZA",
        str(videos / "3MSZA.mp4"),
        31.25,
        24.3,
        30.4,
        "person turn a light on.",
        "charades-sta",
    )
    assert (
        result.report["records"] == 2 and result.report["skipped"] == 0 and result.report["blank_lines"] == 1
    )
    ds = result.dataset()
    assert ds.num_rows == 2 and ds[1]["query"] == "a person is putting a book on a shelf."
    assert GroundingRecord(**ds[0]) == first  # a dataset row is a record's fields, nothing more


def test_charades_sta_rejects_and_counts_every_bad_line(tmp_path: Path) -> None:
    lines = [
        "AAAAA 1.0 5.0##good one.",  # 1
        "AAAAA 1.0 5.0 a missing separator",  # 2 malformed
        "AAAAA 1.0##too few fields",  # 3 malformed
        "AAAAA one 5.0##words for times",  # 4 non_numeric_time
        "AAAAA nan 5.0##not a number",  # 5 non_finite_time
        "AAAAA 6.0 5.0##backwards",  # 6 end_not_after_start
        "AAAAA 2.0 40.0##far past the end",  # 7 span_beyond_duration
        "AAAAA 2.0 30.6##just past the end",  # 8 clipped to 30.0
        "BBBBB 1.0 2.0##no duration for this video",  # 9 missing_duration
        "AAAAA 1.0 5.0##good one.",  # 10 duplicate
        "CCCCC 1.0 2.0##the video file is missing",  # 11 missing_video
        "AAAAA 1.0 2.0##   ",  # 12 empty_query
    ]
    ann, csv = _charades(tmp_path, lines, {"AAAAA": 30.0, "CCCCC": 10.0})
    videos = _touch_videos(tmp_path / "videos", ["AAAAA.mp4"])
    result = load_records("charades-sta", ann, durations=[csv], video_dir=videos, on_error="skip")
    report = result.report
    assert report["skipped_by_reason"] == {
        "duplicate_id": 1,
        "empty_query": 1,
        "end_not_after_start": 1,
        "malformed": 2,
        "missing_duration": 1,
        "missing_video": 1,
        "non_finite_time": 1,
        "non_numeric_time": 1,
        "span_beyond_duration": 1,
    }
    assert report["skipped"] == 10 and report["records"] == 2 and report["clipped"] == 1
    assert sorted(e["line"] for e in report["errors"]) == [2, 3, 4, 5, 6, 7, 9, 10, 11, 12]
    assert all(e["file"] == str(ann) and e["detail"] for e in report["errors"])
    clipped = next(r for r in result.records if r.id == "AAAAA_8")
    assert (clipped.start, clipped.end) == (2.0, 30.0)
    # Fail fast by default: the first bad line stops loading, with file, line and reason in the message.
    with pytest.raises(DataError, match=r"charades_sta_train.txt, line 2: malformed"):
        load_records("charades-sta", ann, durations=csv)


def test_tvg_json_and_activitynet(tmp_path: Path) -> None:
    raw = (
        '{"v_QOlSCBRmfWY": {"duration": 82.73, "timestamps": [[0.83, 19.86], [17.37, 60.81]],'
        ' "sentences": [" A young woman is seen standing in a room.", " She then begins dancing."]},'
        ' "v_dup": {"duration": 10, "timestamps": [[1, 2]], "sentences": ["first"]},'
        ' "v_dup": {"duration": 10, "timestamps": [[1, 2]], "sentences": ["second"]},'
        ' "v_mismatch": {"duration": 10, "timestamps": [[1, 2], [3, 4]], "sentences": ["only one"]},'
        ' "v_badstamp": {"duration": 10, "timestamps": [[1, 2, 3]], "sentences": ["three numbers"]},'
        ' "v_nodur": {"timestamps": [[1, 2]], "sentences": ["no duration"]},'
        ' "v_negative": {"duration": 10, "timestamps": [[-5, 2]], "sentences": ["starts before zero"]},'
        ' "v_zero": {"duration": 0, "timestamps": [[0, 1]], "sentences": ["zero duration"]}}'
    )
    ann = tmp_path / "val_1.json"
    ann.write_text(raw)
    # ActivityNet downloads often drop the "v_" prefix from file names.
    videos = _touch_videos(tmp_path / "anet", ["QOlSCBRmfWY.mkv", "v_dup.mp4", "sub/v_nodur.webm"])
    result = load_records("activitynet", ann, video_dir=videos, on_error="skip")
    by_id = {r.id: r for r in result.records}
    assert by_id["v_QOlSCBRmfWY_0"].query == "A young woman is seen standing in a room."  # leading space gone
    assert by_id["v_QOlSCBRmfWY_1"].video == str(videos / "QOlSCBRmfWY.mkv")
    assert by_id["v_dup_0"].query == "second" and by_id["v_dup_0"].source == "activitynet"
    assert result.report["skipped_by_reason"] == {
        "duplicate_id": 1,
        "invalid_duration": 1,
        "malformed": 3,  # v_mismatch held 2 samples, v_badstamp 1
        "missing_duration": 1,
        "negative_start": 1,
    }
    keys = {e["key"] for e in result.report["errors"]}
    assert keys == {"v_dup", "v_mismatch", "v_badstamp", "v_nodur", "v_negative", "v_zero"}
    # A duration map fills in what the file lacks.
    filled = load_records("tvg-json", ann, durations={"v_nodur": 12.0}, on_error="skip", source="mine")
    assert any(r.id == "v_nodur_0" and r.duration == 12.0 and r.source == "mine" for r in filled.records)
    with pytest.raises(DataError, match=r"key 'v_dup'"):
        load_records("tvg-json", ann)


def test_qvhighlights_splits_multi_window_queries(tmp_path: Path) -> None:
    rows = [
        {
            "qid": 8737,
            "query": "A family is playing basketball together.",
            "duration": 150,
            "vid": "bP5KfdFJzC4_660.0_810.0",
            "relevant_windows": [[0, 16], [20, 40]],
            "relevant_clip_ids": [0, 1],
            "saliency_scores": [[4, 1, 1], [4, 1, 1]],
        },
        {"qid": 9000, "query": "test split: no windows", "duration": 150, "vid": "x_0.0_150.0"},
        {"qid": 8737, "query": "same qid again", "duration": 150, "vid": "y", "relevant_windows": [[0, 2]]},
        {
            "qid": 9001,
            "query": "window past the end",
            "duration": 150,
            "vid": "y",
            "relevant_windows": [[140, 152]],
        },
        {"qid": 9002, "query": "windows not a list", "duration": 150, "vid": "y", "relevant_windows": 5},
    ]
    ann = tmp_path / "highlight_val_release.jsonl"
    ann.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    result = load_records("qvhighlights", ann, on_error="skip")
    assert [(r.id, r.start, r.end) for r in result.records] == [("8737_0", 0, 16), ("8737_1", 20, 40)]
    assert all(r.video_id == "bP5KfdFJzC4_660.0_810.0" for r in result.records)
    assert result.report["skipped_by_reason"] == {
        "duplicate_id": 1,
        "malformed": 2,
        "missing_span": 1,
        "span_beyond_duration": 1,
    }
    assert {e["line"] for e in result.report["errors"]} == {2, 3, 4, 5, 6}


def test_time_r1_list_with_video_paths(tmp_path: Path) -> None:
    videos = _touch_videos(tmp_path / "data", ["charades/AO8RW.mp4", "anet/v_abc.mp4"])
    items = [
        {
            "video": "charades/AO8RW.mp4",
            "duration": 33.67,
            "timestamp": [0.0, 6.9],
            "sentence": "a person is putting a book on a shelf.",
            "qid": 7,
        },
        {"video": "anet/v_abc.mp4", "duration": 20, "timestamp": [1, 5], "sentence": "someone dances"},
        {"video": "gone.mp4", "duration": 20, "timestamp": [1, 5], "sentence": "file is missing", "qid": 9},
        {"video": "anet/v_abc.mp4", "duration": 20, "timestamp": ["a", 5], "sentence": "bad time", "qid": 10},
        {
            "video": "anet/v_abc.mp4",
            "duration": 20,
            "timestamp": [1, 5],
            "sentence": "repeated qid",
            "qid": 7,
        },
        ["not", "an", "object"],
    ]
    ann = write_json(tmp_path / "train_2k5.json", items)
    result = load_records("time-r1", ann, video_dir=videos, on_error="skip")
    assert [(r.id, r.video) for r in result.records] == [
        ("7", str(videos / "charades/AO8RW.mp4")),
        ("v_abc_1", str(videos / "anet/v_abc.mp4")),
    ]
    assert result.report["skipped_by_reason"] == {
        "duplicate_id": 1,
        "malformed": 1,
        "missing_video": 1,
        "non_numeric_time": 1,
    }
    with pytest.raises(DataError, match="is this --format tvg-json"):
        load_records("time-r1", write_json(tmp_path / "dict.json", {"a": {}}))


def test_duration_maps_in_each_supported_form(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("id,length\nA,10.5\nB,3\n")
    (tmp_path / "d.txt").write_text("C 7.25\n\nD,8\n")
    write_json(tmp_path / "d.json", {"E": 4, "F": {"duration": 5.5}})
    merged = load_durations([tmp_path / "d.csv", tmp_path / "d.txt", tmp_path / "d.json"])
    assert merged == {"A": "10.5", "B": "3", "C": "7.25", "D": "8", "E": 4, "F": 5.5}
    (tmp_path / "bad.csv").write_text("video,seconds\nA,1\n")
    with pytest.raises(DataError, match="length/duration column"):
        load_durations(tmp_path / "bad.csv")


def test_unreadable_files_raise_even_when_skipping(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"a": {"duration": 3,\n "timestamps": [[0, 1]]')
    with pytest.raises(DataError, match=r"broken.json, line 2: malformed"):
        load_records("tvg-json", broken, on_error="skip")
    with pytest.raises(DataError, match="not found"):
        load_records("tvg-json", tmp_path / "absent.json")
    with pytest.raises(ValueError, match="unknown format"):
        load_records("youcook", broken)


def test_cli_data_check_prints_json_and_sets_the_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert FORMAT_CHOICES == FORMATS  # the CLI lists formats without importing the loaders
    good = write_json(
        tmp_path / "good.json", {"v1": {"duration": 10, "timestamps": [[1, 2]], "sentences": ["x"]}}
    )
    assert main(["data", "check", "--format", "tvg-json", "--annotations", str(good)]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 1

    bad = write_json(
        tmp_path / "bad.json", {"v1": {"duration": 10, "timestamps": [[1, 20]], "sentences": ["x"]}}
    )
    assert main(["data", "check", "--format", "tvg-json", "--annotations", str(bad)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["skipped"] == 1 and report["errors"][0]["reason"] == "span_beyond_duration"
    assert (
        main(["data", "check", "--format", "tvg-json", "--annotations", str(bad), "--tolerance", "15"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["clipped"] == 1

    videos = _touch_videos(tmp_path / "videos", [])
    assert (
        main(
            ["data", "check", "--format", "tvg-json", "--annotations", str(good), "--video-dir", str(videos)]
        )
        == 1
    )
    assert json.loads(capsys.readouterr().out)["skipped_by_reason"] == {"missing_video": 1}

    (tmp_path / "broken.json").write_text("[")
    assert main(["data", "check", "--format", "time-r1", "--annotations", str(tmp_path / "broken.json")]) == 2
    assert json.loads(capsys.readouterr().out)["fatal"]["reason"] == "malformed"
