"""The video pipeline: Qwen's sampling rules, whole-file and clip reads, the frame cache, bad input."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import (
    read_code,
    truncate,
    with_unknown_codec,
    write_coded_video,
    write_empty_video,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from invert4tvg.data.cache import FrameCache
from invert4tvg.data.video import (
    VideoDecodeError,
    VideoSampling,
    VideoSpec,
    decode_video,
    frame_range,
    num_frames,
    plan_sampling,
    resized_size,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "main": write_coded_video(d / "main.mp4", num_frames=240, fps=24),  # 10 s, 160x120
        "short": write_coded_video(d / "short.mp4", num_frames=40, fps=8, width=112, height=112),
        "mkv": write_coded_video(d / "clip.mkv", num_frames=60, fps=12),
        "faststart": write_coded_video(d / "fs.mp4", num_frames=96, fps=8, faststart=True),
    }


# -- sampling rules -----------------------------------------------------------------------------------------
def test_frame_count_follows_fps_and_is_even_within_bounds() -> None:
    s = VideoSampling()
    assert num_frames(300, 30.0, s) == 20  # 10 s at 2 fps
    assert num_frames(31, 30.0, s) == 4  # ~1 s: raised to min_frames
    assert num_frames(3, 30.0, s) == 2  # fewer source frames than min_frames: as many as exist, even
    assert num_frames(69, 10.0, s) == 12  # 13.8 frames wanted, rounded down to even
    assert num_frames(30 * 3600, 30.0, s) == 768  # one hour: capped at max_frames
    with pytest.raises(ValueError):
        num_frames(1, 30.0, s)


def test_clip_range_rounds_inwards_and_is_clamped() -> None:
    assert frame_range(240, 24.0, None) == (0, 239)
    assert frame_range(240, 24.0, (2.01, 5.0)) == (49, 120)  # start rounds up, end down
    assert frame_range(240, 24.0, (8.0, 99.0)) == (192, 239)  # end clamped to the stream
    with pytest.raises(ValueError, match="fewer than 2"):
        frame_range(240, 24.0, (50.0, 60.0))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    h=st.integers(28, 2000),
    w=st.integers(28, 2000),
    n=st.integers(1, 384).map(lambda k: 2 * k),
    total=st.sampled_from([64 * 784, 3584 * 784, 24576 * 784]),
)
def test_resized_frames_are_multiples_of_28_within_the_budget(h: int, w: int, n: int, total: int) -> None:
    if max(h, w) / min(h, w) > 8:
        return
    s = VideoSampling(total_pixels=total)
    plan = plan_sampling(n * 15, 30.0, h, w, s)
    out_h, out_w = plan.height, plan.width
    assert out_h % 28 == 0 and out_w % 28 == 0
    cap = max(min(768 * 784, total / len(plan.indices) * 2), int(s.min_pixels * 1.05))
    on_grid = (max(28, round(h / 28) * 28), max(28, round(w / 28) * 28))
    if on_grid[0] * on_grid[1] > cap:
        # Scaled down into the budget: each side is the scaled side rounded down to the grid (aspect kept).
        scale = math.sqrt(cap / (h * w))
        assert out_h * out_w <= cap
        for out, side in ((out_h, h), (out_w, w)):
            assert out == 28 or side * scale - 28 - 1e-6 <= out <= side * scale + 1e-6
    elif on_grid[0] * on_grid[1] < s.min_pixels:
        # Scaled up to the floor: each side is the scaled side rounded up.
        scale = math.sqrt(s.min_pixels / (h * w))
        assert out_h * out_w >= s.min_pixels
        for out, side in ((out_h, h), (out_w, w)):
            assert side * scale - 1e-6 <= out <= side * scale + 28 + 1e-6  # float edge: 38 * (112 / 38) > 112
    else:
        assert (out_h, out_w) == on_grid  # only snapped to the grid


def test_resize_shares_the_total_budget() -> None:
    # 20 frames of 640x480 under 3584*28*28 total: about 281k pixels each would be allowed, 307k requested.
    assert resized_size(480, 640, 16 * 784, 3584 * 784 / 20 * 2) == (448, 588)
    assert resized_size(112, 112, 16 * 784, 768 * 784) == (112, 112)  # already on the grid: unchanged
    assert resized_size(60, 80, 16 * 784, 768 * 784) == (112, 140)  # below min_pixels: scaled up


# -- decoding -----------------------------------------------------------------------------------------------
def test_whole_video_returns_the_planned_frames_with_their_timing(videos: dict[str, Path]) -> None:
    v = decode_video(VideoSpec(str(videos["main"])))
    assert v.frames.dtype == np.uint8 and v.frames.ndim == 4
    assert len(v.frames) == 20 and v.frames.shape[1] % 28 == 0 and v.frames.shape[2] % 28 == 0
    assert [read_code(f) for f in v.frames] == v.frame_indices.tolist()
    assert v.frame_indices[0] == 0 and v.frame_indices[-1] == 239
    np.testing.assert_allclose(v.timestamps, v.frame_indices / 24.0)
    meta = v.video_metadata()
    assert meta["total_num_frames"] == 240 and meta["fps"] == 24.0
    assert len(meta["frames_indices"]) / meta["total_num_frames"] * meta["fps"] == pytest.approx(2.0)


@pytest.mark.parametrize("clip", [(2.0, 5.0), (7.3, 9.9), (0.0, 1.2)])
def test_clip_reads_return_frames_from_inside_the_clip(videos: dict[str, Path], clip: tuple) -> None:
    v = decode_video(VideoSpec(str(videos["main"]), clip=clip))
    codes = [read_code(f) for f in v.frames]
    assert codes == v.frame_indices.tolist()
    assert clip[0] * 24 <= codes[0] and codes[-1] <= clip[1] * 24
    assert len(v.frames) % 2 == 0 and len(v.frames) >= 2
    meta = v.video_metadata()
    # Indices relative to the clip, so the processor times the clip as a video of its own at ~2 fps.
    assert meta["frames_indices"][0] == 0
    assert meta["total_num_frames"] == math.floor(clip[1] * 24) - math.ceil(clip[0] * 24) + 1
    # 2 fps, or more when a short clip is raised to min_frames (4).
    assert v.sampled_fps == pytest.approx(max(2.0, 4 / (clip[1] - clip[0])), rel=0.3)
    np.testing.assert_allclose(v.timestamps, v.frame_indices / 24.0)


def test_containers_without_a_frame_count_and_faststart_files(videos: dict[str, Path]) -> None:
    for key, fps in (("mkv", 12), ("faststart", 8)):
        v = decode_video(VideoSpec(str(videos[key]), clip=(1.0, 4.0)))
        assert [read_code(f) for f in v.frames] == v.frame_indices.tolist()
        assert v.source_fps == fps


def test_sampling_settings_change_count_and_size(videos: dict[str, Path]) -> None:
    small = VideoSampling(fps=1.0, total_pixels=64 * 784, min_pixels=4 * 784)
    v = decode_video(VideoSpec(str(videos["main"]), sampling=small))
    assert len(v.frames) == 10
    h, w = v.frames.shape[1:3]
    assert h * w <= 64 * 784 / 10 * 2 and h % 28 == 0 and w % 28 == 0
    assert [read_code(f) for f in v.frames] == v.frame_indices.tolist()


# -- cache --------------------------------------------------------------------------------------------------
def test_cache_hits_serve_identical_frames_and_keys_track_settings(
    tmp_path: Path, videos: dict[str, Path]
) -> None:
    cache = FrameCache(tmp_path / "cache")
    spec = VideoSpec(str(videos["main"]), clip=(2.0, 6.0))
    first = decode_video(spec, cache=cache)
    again = decode_video(spec, cache=cache)
    assert (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_array_equal(first.frames, again.frames)
    np.testing.assert_array_equal(first.frame_indices, again.frame_indices)
    assert again.video_metadata() == first.video_metadata() and again.clip == first.clip
    decode_video(VideoSpec(str(videos["main"]), clip=(2.0, 6.5)), cache=cache)  # another clip
    decode_video(
        VideoSpec(str(videos["main"]), clip=(2.0, 6.0), sampling=VideoSampling(fps=1.0)), cache=cache
    )
    assert (cache.misses, cache.hits) == (3, 1)
    assert len(cache) == 3 and not list((tmp_path / "cache").rglob(".tmp-*"))


def test_cache_notices_a_changed_file(tmp_path: Path) -> None:
    path = write_coded_video(tmp_path / "v.mp4", num_frames=48, fps=8)
    cache = FrameCache(tmp_path / "cache")
    decode_video(VideoSpec(str(path)), cache=cache)
    write_coded_video(path, num_frames=64, fps=8)  # same name, new content
    v = decode_video(VideoSpec(str(path)), cache=cache)
    assert cache.hits == 0 and v.range_num_frames == 64


def test_cache_is_bounded_and_evicts_least_recently_used(tmp_path: Path, videos: dict[str, Path]) -> None:
    probe = FrameCache(tmp_path / "probe")
    entry = decode_video(VideoSpec(str(videos["short"]), clip=(0.0, 2.0)), cache=probe)
    size = probe.size_bytes()
    cache = FrameCache(tmp_path / "cache", max_bytes=int(size * 3.5))
    clips = [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0), (0.5, 2.5)]
    for clip in clips[:3]:
        decode_video(VideoSpec(str(videos["short"]), clip=clip), cache=cache)
    os.utime(next((tmp_path / "cache").rglob("*.npz")), (1, 1))  # pretend one entry is old
    decode_video(VideoSpec(str(videos["short"]), clip=clips[0]), cache=cache)  # a hit refreshes its entry
    decode_video(VideoSpec(str(videos["short"]), clip=clips[3]), cache=cache)
    assert cache.size_bytes() <= cache.max_bytes
    assert len(cache) == 3
    hits = cache.hits
    decode_video(VideoSpec(str(videos["short"]), clip=clips[0]), cache=cache)
    assert cache.hits == hits + 1  # the recently used entry survived
    assert entry.frames.shape[0] > 0


def test_cache_drops_damaged_entries_and_survives_concurrent_use(
    tmp_path: Path, videos: dict[str, Path]
) -> None:
    cache = FrameCache(tmp_path / "cache")
    spec = VideoSpec(str(videos["main"]), clip=(3.0, 6.0))
    reference = decode_video(spec, cache=cache)
    entry = next((tmp_path / "cache").rglob("*.npz"))
    entry.write_bytes(b"half-written")
    assert np.array_equal(decode_video(spec, cache=cache).frames, reference.frames)  # a miss, re-decoded
    # Several workers decoding and reading the same entries: every result complete and identical.
    cache.clear()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(4):
                got = decode_video(spec, cache=FrameCache(tmp_path / "cache"))
                assert np.array_equal(got.frames, reference.frames)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert not list((tmp_path / "cache").rglob(".tmp-*"))


# -- bad input ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_videos(
    tmp_path_factory: pytest.TempPathFactory, videos: dict[str, Path]
) -> dict[str, tuple[Path, str]]:
    d = tmp_path_factory.mktemp("bad")
    garbage = d / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return {
        "missing": (d / "nope.mp4", "not found"),
        "directory": (d, "directory"),
        "truncated_header_first": (truncate(videos["faststart"], d / "cut_fs.mp4", 0.5), "truncated"),
        "truncated_index_lost": (truncate(videos["short"], d / "cut.mp4", 0.5), "not a readable video"),
        "corrupt": (garbage, "not a readable video"),
        "zero_frames": (write_empty_video(d / "empty.avi"), "zero frames"),
        "unknown_codec": (with_unknown_codec(videos["short"], d / "codec.mp4"), "no decoder"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "directory",
        "truncated_header_first",
        "truncated_index_lost",
        "corrupt",
        "zero_frames",
        "unknown_codec",
    ],
)
def test_bad_videos_raise_one_error_type_naming_the_file(
    tmp_path: Path, bad_videos: dict[str, tuple[Path, str]], case: str
) -> None:
    path, reason = bad_videos[case]
    with pytest.raises(VideoDecodeError) as info:
        decode_video(VideoSpec(str(path)), cache=FrameCache(tmp_path / "cache"))
    assert info.value.path == str(path)
    assert str(path) in str(info.value) and reason in info.value.reason


def test_a_clip_outside_the_video_is_a_decode_error(videos: dict[str, Path]) -> None:
    with pytest.raises(VideoDecodeError, match="fewer than 2 source frames"):
        decode_video(VideoSpec(str(videos["short"]), clip=(30.0, 40.0)))
    with pytest.raises(VideoDecodeError, match="invalid clip"):
        decode_video(VideoSpec(str(videos["short"]), clip=(3.0, 2.0)))


# -- parity with the reference implementation ---------------------------------------------------------------
def _skip_reason() -> str | None:
    if importlib.util.find_spec("qwen_vl_utils") is None:
        return "qwen-vl-utils is not installed"
    if importlib.util.find_spec("decord") is None:
        return "decord is not installed: on CPU qwen-vl-utils can only read videos through decord (pip install decord)"
    return None


PARITY_SCRIPT = """
import json, os, sys
import invert4tvg  # makes the CUDA torchvision wheel importable on CPU torch
from qwen_vl_utils import fetch_video
out = []
for ele in json.loads(sys.argv[1]):
    video, meta = fetch_video(ele, return_video_metadata=True)
    out.append({"indices": [int(i) for i in meta["frames_indices"]], "total": int(meta["total_num_frames"]),
                "shape": list(video.shape), "frames": video.permute(0, 2, 3, 1).round().clamp(0, 255).byte().numpy().tolist()})
print(json.dumps(out))
"""


@pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")
def test_sampling_matches_qwen_vl_utils_fetch_video(videos: dict[str, Path]) -> None:
    samplings = {
        "default": VideoSampling(),
        "small": VideoSampling(fps=1.0, total_pixels=64 * 784, min_pixels=4 * 784),
    }
    cases = [
        ("main", None, "default"),
        ("main", (2.0, 5.0), "default"),
        ("main", (7.3, 9.9), "small"),
        ("short", None, "default"),
        ("short", (0.6, 4.1), "default"),
        ("mkv", None, "small"),
    ]
    elements = []
    for key, clip, name in cases:
        s = samplings[name]
        ele = {
            "video": str(videos[key]),
            "fps": s.fps,
            "min_frames": s.min_frames,
            "max_frames": s.max_frames,
            "min_pixels": s.min_pixels,
            "max_pixels": s.max_pixels,
            "total_pixels": s.total_pixels,
        }
        if clip:
            ele.update(video_start=clip[0], video_end=clip[1])
        elements.append(ele)
    env = {**os.environ, "FORCE_QWENVL_VIDEO_READER": "decord"}
    proc = subprocess.run(
        [sys.executable, "-c", PARITY_SCRIPT, json.dumps(elements)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    reference = json.loads(proc.stdout.strip().splitlines()[-1])
    for (key, clip, name), ref in zip(cases, reference):
        ours = decode_video(VideoSpec(str(videos[key]), clip=clip, sampling=samplings[name]))
        start = ours.range_start_index
        assert (ours.frame_indices).tolist() == ref["indices"], (key, clip)
        assert ours.video_metadata()["frames_indices"] == [i - start for i in ref["indices"]]
        assert ours.range_num_frames == ref["total"]
        assert list(ours.frames.shape) == [ref["shape"][0], ref["shape"][2], ref["shape"][3], 3], (key, clip)
        # Same frames, resized by a different implementation (swscale vs torchvision): close, not equal.
        diff = np.abs(ours.frames.astype(int) - np.asarray(ref["frames"], dtype=int)).mean()
        assert diff < 3.0, (key, clip, diff)


@pytest.mark.skipif(
    importlib.util.find_spec("decord") is None, reason="decord is not installed (optional backend)"
)
def test_decord_backend_agrees_with_pyav(videos: dict[str, Path]) -> None:
    spec = VideoSpec(str(videos["main"]), clip=(2.0, 5.0))
    a, b = decode_video(spec), decode_video(spec, backend="decord")
    assert a.frame_indices.tolist() == b.frame_indices.tolist() and a.frames.shape == b.frames.shape
    assert [read_code(f) for f in b.frames] == b.frame_indices.tolist()
