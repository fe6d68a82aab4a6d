"""Decode a video (or a clip of it) into the frames Qwen2.5-VL is fed, following its sampling rules.

PyAV does the work: the sampling plan (data/sampling.py) is made from the container's metadata before anything
is decoded, a clip read seeks to the keyframe before the clip instead of decoding from the start, only the frames
that are kept are converted to RGB, and they are scaled to their final size in the same swscale call. decord is
an optional second backend (``backend="decord"``). Any problem with the input file raises
:class:`VideoDecodeError`, which names the file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from fractions import Fraction
from typing import Literal

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from invert4tvg.data.cache import FrameCache
from invert4tvg.data.frames import DecodedVideo, VideoSampling, VideoSpec
from invert4tvg.data.sampling import (
    SamplingPlan,
    frame_indices,
    frame_pixel_cap,
    frame_range,
    num_frames,
    plan_sampling,
    resized_size,
)

__all__ = [
    "DecodedVideo",
    "SamplingPlan",
    "VideoDecodeError",
    "VideoSampling",
    "VideoSpec",
    "decode_video",
    "frame_indices",
    "frame_pixel_cap",
    "frame_range",
    "num_frames",
    "plan_sampling",
    "probe_video",
    "resized_size",
]

Backend = Literal["pyav", "decord"]


class VideoDecodeError(Exception):
    """A video file is missing, truncated, corrupt, empty or in a codec that cannot be decoded.

    ``path`` is the file and ``reason`` what went wrong. Fix or re-encode the file (``ffmpeg -i IN -c:v libx264
    OUT.mp4``), or drop its samples: ``invert4tvg data check --video-dir DIR`` lists the files it cannot find or
    decode.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"cannot decode video {self.path}: {reason}. Check the file (ffprobe {self.path}), re-encode it to "
            "H.264 mp4, or remove its samples from the annotations."
        )


def _open(path: str) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    if os.path.isdir(path):
        raise VideoDecodeError(path, "is a directory, not a video file")
    try:
        return av.open(path, metadata_errors="ignore")
    except (av.error.FFmpegError, OSError) as err:
        raise VideoDecodeError(path, f"not a readable video container ({err})") from err


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise VideoDecodeError(path, "the file has no video stream (or its video track holds no frames)")
    stream = container.streams.video[0]
    if stream.codec_context is None or not stream.codec_context.codec:
        raise VideoDecodeError(path, "no decoder for its codec")
    return stream


def _count_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """Frame count when the container does not store it (mkv, webm): demux packets, nothing is decoded."""
    count = 0
    try:
        for packet in container.demux(stream):
            count += packet.size > 0
    except av.error.FFmpegError:
        if count == 0:
            return 0  # an empty stream can fail its first read instead of ending cleanly
        # otherwise the data ends early: the frames read so far are the stream (truncated files are common)
    if count:
        container.seek(0)
    return count


def probe_video(path: str) -> tuple[int, float, int, int]:
    """``(total_frames, fps, height, width)`` of a file's first video stream, from metadata (no decoding)."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        return _probe(container, stream, path)


def _probe(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: str
) -> tuple[int, float, int, int]:
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    if not math.isfinite(fps) or fps <= 0:
        raise VideoDecodeError(path, "the video stream has no frame rate")
    height, width = stream.codec_context.height, stream.codec_context.width
    if not height or not width:
        raise VideoDecodeError(path, "the video stream has no frame size (unsupported or damaged codec data)")
    try:
        total = stream.frames or _count_frames(container, stream)
    except av.error.FFmpegError as err:
        raise VideoDecodeError(path, f"cannot read its packets ({err})") from err
    if total <= 0:
        raise VideoDecodeError(path, "the video stream has zero frames")
    return int(total), fps, int(height), int(width)


def _plan(spec: VideoSpec, total: int, fps: float, height: int, width: int) -> SamplingPlan:
    if spec.clip is not None and not (
        all(math.isfinite(t) for t in spec.clip) and spec.clip[1] > spec.clip[0]
    ):
        raise VideoDecodeError(spec.path, f"invalid clip {spec.clip}: need finite start < end seconds")
    try:
        return plan_sampling(total, fps, height, width, spec.sampling, spec.clip)
    except ValueError as err:
        raise VideoDecodeError(spec.path, str(err)) from err


def _decode_pyav(spec: VideoSpec) -> tuple[np.ndarray, SamplingPlan, float]:
    path = spec.path
    with _open(path) as container:
        stream = _video_stream(container, path)
        total, fps, height, width = _probe(container, stream, path)
        plan = _plan(spec, total, fps, height, width)
        try:
            frames = _read_frames(container, stream, plan, fps, path)
        except av.error.FFmpegError as err:
            raise VideoDecodeError(path, f"decoding failed ({err})") from err
    return frames, plan, fps


def _read_frames(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    plan: SamplingPlan,
    fps: float,
    path: str,
) -> np.ndarray:
    wanted = [int(i) for i in plan.indices]
    out = np.empty((len(wanted), plan.height, plan.width, 3), dtype=np.uint8)
    time_base = stream.time_base or Fraction(1, 1)
    origin = stream.start_time or 0

    def index_of(frame: av.VideoFrame, counter: int) -> int:
        if frame.pts is None:
            return counter
        return round(float((frame.pts - origin) * time_base) * fps)

    # One reformatter for the whole call: it keeps its swscale context, which frame.reformat() rebuilds every time
    # (three times slower for bicubic scaling).
    reformatter = VideoReformatter()

    def convert(frame: av.VideoFrame) -> np.ndarray:
        scaled = reformatter.reformat(
            frame, width=plan.width, height=plan.height, format="rgb24", interpolation="BICUBIC"
        )
        return scaled.to_ndarray()

    error: av.error.FFmpegError | None = None

    def decoded() -> Iterator[av.VideoFrame]:
        # A damaged packet is skipped (the decoder recovers at the next keyframe) and a read error ends the stream
        # like EOF does; whether what was missed matters is judged below.
        nonlocal error
        try:
            for packet in container.demux(stream):
                try:
                    yield from packet.decode()
                except av.error.InvalidDataError as err:
                    error = err
        except av.error.FFmpegError as err:
            error = err

    for attempt in range(2):
        sequential = wanted[0] == 0 or attempt == 1
        if sequential:
            container.seek(0)  # decoding from the start, frame counting is exact even without timestamps
        else:
            container.seek(origin + int(wanted[0] / fps / time_base), stream=stream, backward=True)
        filled, last, last_index, counter = 0, None, -1, 0
        overshot = False
        error = None
        for frame in decoded():
            if not sequential and frame.pts is None:
                overshot = True  # no timestamps to place frames after a seek: count them from the start
                break
            index = index_of(frame, counter)
            counter += 1
            if not sequential and filled == 0 and index > wanted[0]:
                overshot = True  # the seek landed past the first frame we need: decode from the start instead
                break
            last, last_index = frame, index
            if index < wanted[filled]:
                continue
            # Take the first frame at or after each wanted index (variable frame rate streams can skip indices).
            image = convert(frame)
            while filled < len(wanted) and wanted[filled] <= index:
                out[filled] = image
                filled += 1
            if filled == len(wanted):
                return out
        if not overshot:
            break
    cause = f": {error}" if error is not None else ""
    if last is None:
        raise VideoDecodeError(path, f"no frame could be decoded (corrupt data or unsupported codec{cause})")
    # Containers sometimes declare a frame or two more than they hold; anything more is a truncated file.
    slack = max(2, round(0.25 * fps))
    if wanted[-1] - last_index > slack:
        raise VideoDecodeError(
            path,
            f"decoding stopped at frame {last_index} but frame {wanted[filled]} was needed and the header "
            f"declares more (truncated or corrupt file{cause})",
        )
    image = convert(last)
    out[filled:] = image
    return out


def _decode_decord(spec: VideoSpec) -> tuple[np.ndarray, SamplingPlan, float]:
    try:
        import decord
    except ImportError as err:
        raise ImportError("backend='decord' needs the decord package: pip install decord") from err
    path = spec.path
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    try:
        reader = decord.VideoReader(path, num_threads=1)
        total, fps = len(reader), float(reader.get_avg_fps())
        height, width = reader[0].shape[:2]
        plan = _plan(spec, total, fps, height, width)
        reader = decord.VideoReader(path, num_threads=1, width=plan.width, height=plan.height)
        frames = reader.get_batch([int(i) for i in plan.indices]).asnumpy()
    except (decord.DECORDError, RuntimeError) as err:
        raise VideoDecodeError(path, f"decord cannot read it ({err})") from err
    return np.ascontiguousarray(frames, dtype=np.uint8), plan, fps


def decode_video(spec: VideoSpec, cache: FrameCache | None = None, backend: Backend = "pyav") -> DecodedVideo:
    """Sampled, resized frames of ``spec`` (a whole file or its clip), from ``cache`` when it holds them.

    Raises :class:`VideoDecodeError` when the file is missing, truncated, corrupt, has no frames or cannot be
    decoded, or when the clip lies outside the video or covers fewer than two source frames.
    """
    key = None
    if cache is not None:
        try:
            key = FrameCache.key(spec, backend)
        except FileNotFoundError as err:
            raise VideoDecodeError(spec.path, "file not found") from err
        cached = cache.get(key)
        if cached is not None:
            return cached
    if backend == "pyav":
        frames, plan, fps = _decode_pyav(spec)
    elif backend == "decord":
        frames, plan, fps = _decode_decord(spec)
    else:
        raise ValueError(f"unknown video backend {backend!r}; use 'pyav' or 'decord'")
    video = DecodedVideo(
        frames=frames,
        timestamps=plan.indices / fps,
        frame_indices=plan.indices.copy(),
        source_fps=fps,
        range_num_frames=plan.range_num_frames,
        path=spec.path,
        clip=None if spec.clip is None else (float(spec.clip[0]), float(spec.clip[1])),
        range_start=plan.range_start,
    )
    if cache is not None and key is not None:
        cache.put(key, video)
    return video
