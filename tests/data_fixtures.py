"""Helpers for the data tests: videos whose frames carry their own index, and broken files of each kind.

A "coded" video draws its frame index as a row of black/white bars (one bit per bar), large enough to survive
H.264 and resizing, so a test can read back which source frame the pipeline returned.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CODE_BITS = 10


def coded_frame(index: int, width: int, height: int) -> np.ndarray:
    bits = [(index >> k) & 1 for k in range(CODE_BITS)]
    row = np.repeat(np.array(bits, dtype=np.uint8) * 255, int(np.ceil(width / CODE_BITS)))[:width]
    img = np.broadcast_to(row[None, :, None], (height, width, 3)).copy()
    img[: height // 4] = 128  # a grey band: frames are not symmetric, so a flip would be noticed
    return img


def read_code(frame: np.ndarray) -> int:
    """The index drawn by :func:`coded_frame`, read from a (possibly resized) decoded frame."""
    h, w, _ = frame.shape
    lower = frame[h // 2 :, :, :].mean(axis=(0, 2))
    code = 0
    for k in range(CODE_BITS):
        lo, hi = int(k * w / CODE_BITS), int((k + 1) * w / CODE_BITS)
        centre = lower[lo + (hi - lo) // 4 : hi - (hi - lo) // 4]
        code |= int(centre.mean() > 127) << k
    return code


def write_coded_video(
    path: Path,
    num_frames: int,
    fps: int,
    width: int = 160,
    height: int = 120,
    gop: int | None = None,
    faststart: bool = False,
    codec: str = "libx264",
) -> Path:
    """An H.264 file of ``num_frames`` coded frames at ``fps`` (container chosen by the suffix)."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop or 2 * fps
        if codec == "libx264":
            stream.codec_context.options = {"crf": "18", "preset": "ultrafast", "threads": "1"}
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(coded_frame(i, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_empty_video(path: Path) -> Path:
    """A container with a declared video stream and no frames (``.avi``: mp4 drops empty tracks)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    return path


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def with_unknown_codec(src: Path, dst: Path) -> Path:
    """Rename the H.264 sample-entry tag so no decoder matches (an mp4 in a codec FFmpeg cannot decode)."""
    data = src.read_bytes()
    assert b"avc1" in data
    dst.write_bytes(data.replace(b"avc1", b"zzzz"))
    return dst


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path
