"""Decode a whole video file to find out whether training can read it (``invert4tvg data check``).

Opening a file and reading its header is not enough: a truncated mp4 whose index comes first opens fine and fails
only when the frames past the cut are needed, and a text file named ``.mp4`` fails only at open. Every packet is
decoded (no colour conversion, FFmpeg's own threads), so a check costs about one decode of the file.
"""

from __future__ import annotations

from typing import NamedTuple

import av

from invert4tvg.data.video import VideoDecodeError, _open, _probe, _video_stream


class VideoInfo(NamedTuple):
    """What training's sampling reads from a stream (``data/video.py``'s probe), and the frames really decoded."""

    frames: int  # as training counts them (the header's count, else the packets)
    fps: float
    height: int
    width: int
    decoded: int

    @property
    def duration(self) -> float:
        """Seconds, as training's sampling sees the stream (frames / fps)."""
        return self.frames / self.fps


def verify_video(path: str) -> VideoInfo:
    """Decode every frame of ``path``; return what training will see or raise :class:`VideoDecodeError` saying why
    it cannot read it."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        total, fps, height, width = _probe(container, stream, path)
        container.seek(0)
        stream.thread_type = "AUTO"
        decoded, last_time, error = 0, None, None
        try:
            for packet in container.demux(stream):
                try:
                    for frame in packet.decode():
                        decoded += 1
                        if frame.time is not None:
                            last_time = frame.time
                except av.error.InvalidDataError as err:
                    error = err
        except av.error.FFmpegError as err:
            error = err
    if decoded == 0:
        raise VideoDecodeError(path, f"no frame could be decoded ({error or 'empty stream'})")
    if error is not None:
        raise VideoDecodeError(path, f"corrupt data after frame {decoded} ({error})")
    slack = max(2, round(0.25 * fps))
    if stream.frames and decoded < stream.frames - slack:
        raise VideoDecodeError(
            path,
            f"only {decoded} of the {stream.frames} frames its header declares could be decoded (truncated)",
        )
    duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    if duration and last_time is not None and last_time < duration - max(1.0, slack / fps):
        raise VideoDecodeError(
            path, f"frames end at {last_time:.1f} s of a {duration:.1f} s stream (truncated)"
        )
    return VideoInfo(total, fps, height, width, decoded)
