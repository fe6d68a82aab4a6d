"""Video pipeline throughput: uncached vs cached, whole-file vs clip reads, PyAV vs decord.

Writes two test videos (a Charades-like 320x240 30 fps 30 s H.264 file and a default synthetic-benchmark video),
decodes each with Qwen2.5-VL's default sampling (2 fps, 3584*28*28 total pixels) and reports the median time per
call and the sampled frames per second. ``--synth-videos N`` also times ``invert4tvg synth`` for N videos.

    .venv/bin/python benchmarks/video_decode.py [--repeats 15] [--synth-videos 1000 --workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

import invert4tvg  # noqa: F401  (torchvision compat before anything else)
from invert4tvg.data.cache import FrameCache
from invert4tvg.data.frames import VideoSpec
from invert4tvg.data.synthetic import SynthConfig, generate_benchmark
from invert4tvg.data.video import decode_video


def write_charades_like(
    path: Path, seconds: int = 30, fps: int = 30, size: tuple[int, int] = (320, 240)
) -> Path:
    """Moving gradients and a moving block: enough detail that H.264 has real work to do."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.options = {"crf": "23", "preset": "veryfast"}
        for i in range(seconds * fps):
            img = np.empty((h, w, 3), dtype=np.uint8)
            img[..., 0] = (xx + 3 * i) % 256
            img[..., 1] = (yy * 2 + i) % 256
            img[..., 2] = ((xx + yy) // 2 + 5 * i) % 256
            x0 = (7 * i) % (w - 60)
            img[60:120, x0 : x0 + 60] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def cases_for(label: str, path: Path, clip: tuple[float, float], cache_dir: Path) -> list[tuple]:
    """(video label, read description, callable) for every way of reading one file."""
    backends = ["pyav"]
    try:
        import decord  # noqa: F401

        backends.append("decord")
    except ImportError:
        pass
    specs = {
        "whole file": VideoSpec(str(path)),
        f"clip {clip[0]:g}-{clip[1]:g} s": VideoSpec(str(path), clip),
    }
    cases = []
    for backend in backends:
        for name, spec in specs.items():
            cases.append(
                (label, f"{backend}, {name}, uncached", lambda s=spec, b=backend: decode_video(s, backend=b))
            )
    cache = FrameCache(cache_dir / label.replace(" ", "_"))
    for name, spec in specs.items():
        decode_video(spec, cache=cache)  # fill, so every timed call is a hit
        cases.append((label, f"pyav, {name}, cache hit", lambda s=spec: decode_video(s, cache=cache)))
    return cases


def run_interleaved(cases: list[tuple], repeats: int) -> list[tuple]:
    """Median seconds per case. Rounds visit every case in turn, so load changes hit all cases alike."""
    times: list[list[float]] = [[] for _ in cases]
    outputs = [None] * len(cases)
    for _ in range(repeats):
        for k, (_, _, fn) in enumerate(cases):
            t0 = time.perf_counter()
            outputs[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return [
        (label, name, statistics.median(t), len(out.frames), out.frames.shape[1:3])
        for (label, name, _), t, out in zip(cases, times, outputs)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--synth-videos", type=int, default=0, help="also time generating N synthetic videos")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, PyAV {av.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        charades = write_charades_like(tmp / "charades_like.mp4")
        synth = generate_benchmark(
            tmp / "synth", 1, seed=0, config=SynthConfig(duration=(20.0, 20.0)), progress=False
        )
        cases = cases_for("320x240 30 fps 30 s", charades, (12.0, 17.0), tmp / "cache")
        cases += cases_for(
            "synthetic 112x112 8 fps 20 s", synth / "videos" / "synth-00000.mp4", (8.0, 13.0), tmp / "cache"
        )
        rows = run_interleaved(cases, args.repeats)

        print("\n| video | read | ms per call | sampled frames | frames/s | output size |")
        print("|---|---|---:|---:|---:|---|")
        for label, name, seconds, n, shape in rows:
            print(
                f"| {label} | {name} | {seconds * 1000:.1f} | {n} | {n / seconds:,.0f} | {shape[0]}x{shape[1]} |"
            )
        for label in dict.fromkeys(r[0] for r in rows):
            mine = {r[1]: r[2] for r in rows if r[0] == label}
            whole = mine["pyav, whole file, uncached"]
            clip_key = next(k for k in mine if k.startswith("pyav, clip") and k.endswith("uncached"))
            hit = next(k for k in mine if k.startswith("pyav, whole") and k.endswith("cache hit"))
            print(
                f"\n{label}: clip read takes {mine[clip_key] / whole:.2f}x the time of a whole-file read; "
                f"a cache hit is {whole / mine[hit]:.0f}x faster than decoding the whole file"
            )

        if args.synth_videos:
            t0 = time.perf_counter()
            generate_benchmark(
                tmp / "synth_big", args.synth_videos, seed=0, workers=args.workers, progress=False
            )
            elapsed = time.perf_counter() - t0
            print(
                f"\nsynth: {args.synth_videos} default videos with {args.workers} workers in {elapsed:.1f} s "
                f"({args.synth_videos / elapsed:.1f} videos/s)"
            )


if __name__ == "__main__":
    main()
