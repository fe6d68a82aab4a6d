"""Value types shared by the video pipeline and everything that feeds video to a model.

``VideoSampling`` holds Qwen2.5-VL's frame-sampling settings (the rules qwen-vl-utils' ``fetch_video`` applies),
``VideoSpec`` names what to read (a file and optionally a clip of it), and ``DecodedVideo`` is what the pipeline
returns: frames plus the timing the processor needs as ``video_metadata``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

IMAGE_FACTOR = 28
FRAME_FACTOR = 2


@dataclass(frozen=True)
class VideoSampling:
    """How frames are sampled and sized. Defaults are the paper's (and the public TVG RL code's) settings."""

    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 768
    total_pixels: int = 3584 * 28 * 28  # ~2.8 M pixels per video
    min_pixels: int = 16 * 28 * 28
    max_pixels: int = 768 * 28 * 28  # per-frame cap before the total budget is shared out

    def key(self) -> str:
        """A stable string that identifies these settings (cache keys, run metadata)."""
        return (
            f"fps={self.fps:g},frames={self.min_frames}-{self.max_frames},"
            f"px={self.min_pixels}-{self.max_pixels},total={self.total_pixels}"
        )


@dataclass(frozen=True)
class VideoSpec:
    """What to feed the model: a file, optionally only the clip ``[clip[0], clip[1]]`` seconds of it."""

    path: str
    clip: tuple[float, float] | None = None
    sampling: VideoSampling = field(default_factory=VideoSampling)


@dataclass
class DecodedVideo:
    """Sampled frames of a video (or of one clip of it) with their timing.

    ``frames`` is ``(T, H, W, 3)`` uint8 with ``T`` even and ``H``, ``W`` multiples of 28. ``timestamps`` are seconds
    from the start of the file. ``range_num_frames`` is how many source frames the decoded range spans (the whole
    file, or the clip) and ``frame_indices`` index the source stream. ``range_start`` is the source index of the
    range's first frame (``ceil(clip[0] * fps)`` under Qwen's rules; 0 for a whole file).
    """

    frames: np.ndarray
    timestamps: np.ndarray
    frame_indices: np.ndarray
    source_fps: float
    range_num_frames: int
    path: str
    clip: tuple[float, float] | None = None
    range_start: int | None = None

    @property
    def range_start_index(self) -> int:
        if self.range_start is not None:
            return int(self.range_start)
        # Qwen's rule rounds a clip's start up to the next whole frame (see data/sampling.py::frame_range).
        return math.ceil(max(self.clip[0], 0.0) * self.source_fps) if self.clip else 0

    @property
    def sampled_fps(self) -> float:
        return len(self.frames) / max(self.range_num_frames, 1) * self.source_fps

    def video_metadata(self) -> dict:
        """The processor's ``video_metadata`` entry.

        transformers derives Qwen2.5-VL's ``second_per_grid_ts`` from ``len(frames_indices) / total_num_frames * fps``;
        without this it assumes 24 fps and every temporal position is wrong. Indices are relative to the decoded range
        so that a clip is timed like a video of its own (as qwen-vl-utils does for ``video_start``/``video_end``).
        """
        start = self.range_start_index
        return {
            "total_num_frames": int(self.range_num_frames),
            "fps": float(self.source_fps),
            "frames_indices": [int(i) - start for i in self.frame_indices],
        }
