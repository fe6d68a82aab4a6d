"""Bad input on the data side (issue 10): ``data check`` decodes every video, a damaged frame-cache entry is
re-decoded, and rejected samples are counted and reported the way the messages say."""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from data_fixtures import truncate, write_json

from invert4tvg.builders import load_split
from invert4tvg.cli import main as cli
from invert4tvg.config import DataArguments
from invert4tvg.data.cache import FrameCache
from invert4tvg.data.formats import load_records
from invert4tvg.data.frames import VideoSpec
from invert4tvg.data.video import decode_video


def write_faststart_video(path: Path, frames: int = 48, fps: int = 8) -> Path:
    """An mp4 whose index comes first: cut short, it still opens, and only decoding finds the missing frames."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        rng = np.random.default_rng(0)
        for _ in range(frames):  # noise: every frame costs bytes, so a cut loses frames, not just padding
            image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def bad_videos(tmp_path):
    """Annotations over five videos: two good, one truncated (index first), one zero-byte, one text file."""
    videos = tmp_path / "videos"
    videos.mkdir()
    write_faststart_video(videos / "good1.mp4")
    write_faststart_video(videos / "good2.mp4")
    truncate(write_faststart_video(tmp_path / "whole.mp4"), videos / "cut.mp4", 0.6)
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "text.mp4").write_text("this is not a video\n")
    entries = {
        vid: {
            "duration": 6.0,
            "timestamps": [[0.5, 2.0], [2.5, 4.0]],
            "sentences": ["a person opens a door."] * 2,
        }
        for vid in ("good1", "good2", "cut", "empty", "text")
    }
    return write_json(tmp_path / "ann.json", entries), videos


def check(capsys, *argv: str) -> tuple[int, dict, str]:
    code = cli(["data", "check", "--format", "tvg-json", *argv])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def test_data_check_decodes_every_video_and_lists_the_unreadable(bad_videos, capsys):
    ann, videos = bad_videos
    code, report, err = check(capsys, "--annotations", str(ann), "--video-dir", str(videos))
    assert code == 1
    assert report["videos_decoded"] == 5
    bad = {Path(b["video"]).name: b for b in report["unreadable_videos"]}
    assert sorted(bad) == ["cut.mp4", "empty.mp4", "text.mp4"]
    assert "truncated" in bad["cut.mp4"]["reason"]
    assert all(b["samples"] == 2 for b in bad.values())
    assert "3 of 5 video(s) cannot be decoded" in err and "unreadable video" in err


def test_data_check_no_decode_only_checks_that_files_exist(bad_videos, capsys):
    ann, videos = bad_videos
    code, report, _ = check(capsys, "--annotations", str(ann), "--video-dir", str(videos), "--no-decode")
    assert code == 0 and "unreadable_videos" not in report
    (videos / "text.mp4").unlink()
    code, report, _ = check(capsys, "--annotations", str(ann), "--video-dir", str(videos), "--no-decode")
    assert code == 1 and report["skipped_by_reason"] == {"missing_video": 2}


def test_a_zero_byte_cache_entry_is_dropped_and_decoded_again(tiny_bench, tiny_sampling, tmp_path, caplog):
    cache = FrameCache(tmp_path / "cache")
    spec = VideoSpec(str(tiny_bench / "videos" / "synth-00000.mp4"), sampling=tiny_sampling)
    first = decode_video(spec, cache)
    entry = cache._path(FrameCache.key(spec))
    entry.write_bytes(b"")  # disk full while the entry was copied, a crash, a manual edit
    with caplog.at_level(logging.WARNING):
        again = decode_video(spec, cache)
    assert np.array_equal(again.frames, first.frames)
    assert "dropping unreadable frame-cache entry" in caplog.text
    assert entry.stat().st_size > 0  # written again


def test_a_whole_video_entry_counts_every_sample_it_held(tmp_path, caplog):
    ann = write_json(
        tmp_path / "ann.json",
        {
            "ok": {"duration": 10, "timestamps": [[1, 2]], "sentences": ["a person sits down."]},
            "broken": {"duration": 10, "timestamps": [[1, 2], [3, 4], [5, 6]], "sentences": ["only one"]},
        },
    )
    report = load_records("tvg-json", ann, on_error="skip").report
    assert report["skipped"] == 3 and report["skipped_by_reason"] == {"malformed": 3}
    with caplog.at_level(logging.WARNING):
        load_split(DataArguments(train_annotations=str(ann), on_bad_record="skip"), "train")
    assert '3 samples skipped ({"malformed": 3})' in caplog.text
