"""Draw a planned scene frame by frame and write it as an H.264 mp4 with PyAV.

Shapes are rasterised with Pillow at twice the frame size and box-filtered down (cheap anti-aliasing), then
alpha-composited over the background with numpy. Encoding uses one x264 thread because the generator already
runs one video per process.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from invert4tvg.data.synthetic.actions import ObjectState
from invert4tvg.data.synthetic.scene import Scene
from invert4tvg.data.synthetic.synth_config import COLOURS, SynthConfig

SUPERSAMPLE = 2
BACKGROUND_TONES = ((28, 28, 32), (45, 42, 40), (36, 44, 52), (58, 58, 62), (40, 50, 40))


def background(cfg: SynthConfig, seed: int) -> np.ndarray:
    """A dark neutral backdrop; with ``cfg.texture`` also soft low-frequency blotches and faint stripes."""
    rng = np.random.default_rng(seed)
    tone = np.array(BACKGROUND_TONES[int(rng.integers(len(BACKGROUND_TONES)))], dtype=np.float32)
    img = np.broadcast_to(tone, (cfg.height, cfg.width, 3)).copy()
    if cfg.texture:
        coarse = rng.normal(0.0, 1.0, size=(6, 6)).astype(np.float32)
        blotches = np.asarray(
            Image.fromarray(coarse, mode="F").resize((cfg.width, cfg.height), Image.Resampling.BICUBIC)
        )
        yy, xx = np.mgrid[0 : cfg.height, 0 : cfg.width]
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 14)
        stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
        img += (9.0 * blotches + 4.0 * stripes)[..., None]
    return np.clip(img, 0, 255)


def _polygon(shape: str, s: ObjectState) -> list[tuple[float, float]]:
    r = s.size / 2
    if shape == "square":
        h = 0.8 * r  # about the same area as the circle of the same size
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif shape == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in np.radians([-90, 30, 150])]
    elif shape == "star":
        pts = [
            ((r if k % 2 == 0 else 0.45 * r) * math.cos(a), (r if k % 2 == 0 else 0.45 * r) * math.sin(a))
            for k, a in enumerate(np.radians(np.arange(-90, 270, 36)))
        ]
    elif shape == "cross":
        w, h = 0.34 * r, 0.95 * r
        pts = [
            (w, -h),
            (w, -w),
            (h, -w),
            (h, w),
            (w, w),
            (w, h),
            (-w, h),
            (-w, w),
            (-h, w),
            (-h, -w),
            (-w, -w),
            (-w, -h),
        ]
    else:
        raise ValueError(f"no polygon for shape {shape!r}")
    c, sn = math.cos(math.radians(s.angle)), math.sin(math.radians(s.angle))
    return [(s.x + x * c - y * sn, s.y + x * sn + y * c) for x, y in pts]


def object_mask(shape: str, s: ObjectState, width: int, height: int) -> np.ndarray:
    """Coverage in ``[0, 1]`` of the frame by the object (ignores ``alpha``)."""
    k = SUPERSAMPLE
    img = Image.new("L", (width * k, height * k), 0)
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        r = s.size / 2
        draw.ellipse([(s.x - r) * k, (s.y - r) * k, (s.x + r) * k, (s.y + r) * k], fill=255)
    else:
        draw.polygon([(x * k, y * k) for x, y in _polygon(shape, s)], fill=255)
    if s.mouth > 0:
        # The "mouth": a wedge cut from the centre towards the object's heading.
        big = s.size * k
        box = [s.x * k - big, s.y * k - big, s.x * k + big, s.y * k + big]
        draw.pieslice(box, s.angle - s.mouth / 2, s.angle + s.mouth / 2, fill=0)
    small = img.resize((width, height), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


CLOCK_BASE = 20.0  # grey level of a clock video's background at t = 0


def render_frame(scene: Scene, t: float, base: np.ndarray, cfg: SynthConfig) -> np.ndarray:
    # With a clock, every video has the same brightness at the same second, so brightness reads as time.
    canvas = np.full_like(base, CLOCK_BASE + cfg.clock_step * t) if cfg.clock == "tint" else base.copy()
    for obj in scene.objects:
        if cfg.visibility == "acting" and not any(e.start <= t < e.end for e in obj.events):
            continue
        state = obj.state_at(t)
        if state.alpha <= 0.0:
            continue
        cover = object_mask(obj.shape, state, cfg.width, cfg.height)[..., None] * state.alpha
        canvas = canvas * (1.0 - cover) + np.asarray(COLOURS[obj.colour], dtype=np.float32) * cover
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def write_video(scene: Scene, cfg: SynthConfig, path: Path) -> None:
    """Encode ``scene`` to ``path`` (written to a temporary name, then renamed: never a half-written mp4)."""
    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    base = background(cfg, scene.background_seed)
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(cfg.fps))
            stream.width, stream.height, stream.pix_fmt = cfg.width, cfg.height, "yuv420p"
            stream.codec_context.gop_size = max(1, round(cfg.keyframe_interval * cfg.fps))
            stream.codec_context.options = {"crf": str(cfg.crf), "preset": "veryfast", "threads": "1"}
            for i in range(scene.num_frames):
                frame = av.VideoFrame.from_ndarray(
                    render_frame(scene, i / cfg.fps, base, cfg), format="rgb24"
                )
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
