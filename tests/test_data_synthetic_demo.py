"""The demo preset's two aids for a model trained from scratch: a visible clock and objects shown only while
they act. Both must say exactly what the annotations say."""

from __future__ import annotations

import json

import numpy as np
import pytest

from invert4tvg.data.synthetic import SynthConfig, generate_benchmark
from invert4tvg.data.synthetic.render import CLOCK_BASE
from invert4tvg.data.video import VideoSampling, VideoSpec, decode_video
from invert4tvg.workflows.demo import ensure_benchmark

SAMPLING = VideoSampling(min_pixels=3136, total_pixels=200704)


@pytest.fixture(scope="module")
def demo_bench(tmp_path_factory):
    config = SynthConfig.preset("demo", visibility="acting", distractors=(0, 0), events_per_object=(1, 1))
    return generate_benchmark(
        tmp_path_factory.mktemp("demo") / "b", 4, 0, config=config, workers=1, progress=False
    )


def videos(bench):
    for split in ("train", "val", "test"):
        yield from json.loads((bench / f"{split}.json").read_text()).items()


def test_clock_brightness_tells_the_time(demo_bench):
    step = SynthConfig.preset("demo").clock_step
    for vid, _ in videos(demo_bench):
        video = decode_video(VideoSpec(str(demo_bench / "videos" / f"{vid}.mp4"), None, SAMPLING))
        # The background is the darkest (most common) grey of each frame; objects are saturated colours.
        grey = np.array([np.median(frame.mean(-1)) for frame in video.frames])
        expected = np.minimum(CLOCK_BASE + step * video.timestamps, 255)
        assert np.abs(grey - expected).max() < 4, vid


def test_objects_are_visible_only_inside_their_spans(demo_bench):
    for vid, entry in videos(demo_bench):
        video = decode_video(VideoSpec(str(demo_bench / "videos" / f"{vid}.mp4"), None, SAMPLING))
        background = np.median(video.frames.reshape(len(video.frames), -1, 3), axis=1)
        visible = np.array(
            [
                (np.abs(f.astype(int) - b).sum(-1) > 60).mean() > 0.005
                for f, b in zip(video.frames, background)
            ]
        )
        ((start, end),) = entry["timestamps"]
        inside = (video.timestamps >= start + 0.3) & (video.timestamps <= end - 0.3)
        outside = (video.timestamps < start - 0.3) | (video.timestamps > end + 0.3)
        kinds = entry["sentences"][0]
        if inside.any() and not any(
            w in kinds.lower() for w in ("appear", "disappear", "enter", "leav", "exit")
        ):
            assert visible[inside].all(), (vid, kinds)
        assert not visible[outside].any(), (vid, kinds)


def test_demo_reuses_its_benchmark_only_when_it_is_the_same_one(tmp_path):
    bench = tmp_path / "bench"
    ensure_benchmark(bench, 3, 0)
    made = (bench / "metadata.json").stat().st_mtime_ns
    ensure_benchmark(bench, 3, 0)
    assert (bench / "metadata.json").stat().st_mtime_ns == made
    # A benchmark of another preset (here: an older demo, objects always visible) is replaced, not trained on.
    generate_benchmark(
        bench,
        3,
        0,
        config=SynthConfig.preset("demo", visibility="always"),
        workers=1,
        progress=False,
        overwrite=True,
    )
    ensure_benchmark(bench, 3, 0)
    meta = json.loads((bench / "metadata.json").read_text())
    assert SynthConfig.from_dict(meta["config"]) == SynthConfig.preset("demo")
