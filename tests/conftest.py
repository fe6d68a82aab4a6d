"""Shared fixtures: the tiny offline Qwen2.5-VL and a small synthetic benchmark, each built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import invert4tvg  # noqa: F401  (first: makes the CUDA-only torchvision wheel importable on CPU torch)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Frames of the "tiny" synthetic preset (56x56) kept at that size: the default 16*28*28 floor would upscale them.
TINY_SAMPLING = {"min_pixels": 3136, "total_pixels": 200704}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from invert4tvg.policy.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 short 56x56 videos (train/val/test JSON dict annotations + videos/)."""
    from invert4tvg.data.synthetic import SynthConfig, generate_benchmark

    out = tmp_path_factory.mktemp("bench") / "bench"
    return generate_benchmark(out, 12, seed=0, config=SynthConfig.preset("tiny"), workers=1, progress=False)


@pytest.fixture(scope="session")
def tiny_sampling():
    from invert4tvg.data.frames import VideoSampling

    return VideoSampling(**TINY_SAMPLING)
