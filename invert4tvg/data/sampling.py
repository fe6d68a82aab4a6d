"""Qwen2.5-VL's video sampling rules as pure functions: which source frames to take and what size to make them.

These follow the rules qwen-vl-utils' ``fetch_video`` applies (see FINDINGS section 4), re-implemented here so
the pipeline does not depend on its backends: a clip ``[t0, t1]`` becomes the source-frame range
``[ceil(t0 * fps), floor(t1 * fps)]``; the frame count is ``range / source_fps * fps`` clamped to
``[min_frames, max_frames]`` and to the range, rounded down to an even number; indices are evenly spaced over the
range; each frame gets a share of the total pixel budget and both sides become multiples of 28. A parity test
(tests/test_data_video.py) checks these against qwen-vl-utils wherever it can run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from invert4tvg.data.frames import FRAME_FACTOR, IMAGE_FACTOR, VideoSampling

# qwen-vl-utils' per-frame ceiling (768 tokens of 28x28) before the total budget is shared out.
VIDEO_FRAME_MAX_PIXELS = 768 * IMAGE_FACTOR * IMAGE_FACTOR
MAX_ASPECT_RATIO = 200


def round_by_factor(number: float, factor: int) -> int:
    return round(number / factor) * factor


def ceil_by_factor(number: float, factor: int) -> int:
    return math.ceil(number / factor) * factor


def floor_by_factor(number: float, factor: int) -> int:
    return math.floor(number / factor) * factor


def frame_range(total_frames: int, source_fps: float, clip: tuple[float, float] | None) -> tuple[int, int]:
    """First and last source-frame index (inclusive) covered by ``clip`` seconds, or the whole stream.

    The clip is clamped to the stream; its start rounds up and its end rounds down to whole frames, so every
    returned frame lies inside the clip. Raises ``ValueError`` when fewer than two frames remain.
    """
    if total_frames <= 0 or source_fps <= 0:
        raise ValueError(
            f"need a positive frame count and fps, got {total_frames} frames at {source_fps} fps"
        )
    if clip is None:
        return 0, total_frames - 1
    max_duration = total_frames / source_fps
    t0 = min(max(float(clip[0]), 0.0), max_duration)
    t1 = min(max(float(clip[1]), 0.0), max_duration)
    start = math.ceil(t0 * source_fps)
    end = min(math.floor(t1 * source_fps), total_frames - 1)
    if start >= end:
        raise ValueError(
            f"clip [{clip[0]:g}, {clip[1]:g}] s covers fewer than 2 source frames "
            f"(stream: {total_frames} frames at {source_fps:g} fps = {max_duration:.2f} s)"
        )
    return start, end


def num_frames(range_frames: int, source_fps: float, sampling: VideoSampling) -> int:
    """How many frames to sample from a range of ``range_frames`` source frames (even, at least 2)."""
    min_frames = ceil_by_factor(sampling.min_frames, FRAME_FACTOR)
    max_frames = floor_by_factor(sampling.max_frames, FRAME_FACTOR)
    wanted = range_frames / source_fps * sampling.fps
    n = floor_by_factor(min(min(max(wanted, min_frames), max_frames), range_frames), FRAME_FACTOR)
    if n < FRAME_FACTOR:
        raise ValueError(f"a range of {range_frames} source frames cannot give {FRAME_FACTOR} sampled frames")
    return n


def frame_indices(start: int, end: int, n: int) -> np.ndarray:
    """``n`` source-frame indices evenly spaced over ``[start, end]`` (round half to even, as torch does)."""
    return np.round(np.linspace(start, end, n)).astype(np.int64)


def frame_pixel_cap(n_frames: int, sampling: VideoSampling) -> float:
    """Per-frame pixel ceiling once the total budget is shared between ``n_frames`` frames."""
    shared = min(VIDEO_FRAME_MAX_PIXELS, sampling.total_pixels / n_frames * FRAME_FACTOR)
    return min(sampling.max_pixels, max(shared, int(sampling.min_pixels * 1.05)))


def resized_size(
    height: int, width: int, min_pixels: float, max_pixels: float, factor: int = IMAGE_FACTOR
) -> tuple[int, int]:
    """Output ``(height, width)``: multiples of ``factor``, aspect ratio kept, area within the pixel bounds."""
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio of a {height}x{width} frame exceeds {MAX_ASPECT_RATIO}")
    h_bar = max(factor, round_by_factor(height, factor))
    w_bar = max(factor, round_by_factor(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, floor_by_factor(height / beta, factor))
        w_bar = max(factor, floor_by_factor(width / beta, factor))
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = ceil_by_factor(height * beta, factor)
        w_bar = ceil_by_factor(width * beta, factor)
    return h_bar, w_bar


@dataclass(frozen=True)
class SamplingPlan:
    """Everything decided before decoding: the source range, the frames to take and the output size."""

    range_start: int
    range_end: int
    indices: np.ndarray
    height: int
    width: int

    @property
    def range_num_frames(self) -> int:
        return self.range_end - self.range_start + 1


def plan_sampling(
    total_frames: int,
    source_fps: float,
    height: int,
    width: int,
    sampling: VideoSampling,
    clip: tuple[float, float] | None = None,
) -> SamplingPlan:
    """Apply all the rules to a stream of ``total_frames`` ``height x width`` frames at ``source_fps``."""
    start, end = frame_range(total_frames, source_fps, clip)
    n = num_frames(end - start + 1, source_fps, sampling)
    out_h, out_w = resized_size(height, width, sampling.min_pixels, frame_pixel_cap(n, sampling))
    return SamplingPlan(start, end, frame_indices(start, end, n), out_h, out_w)
