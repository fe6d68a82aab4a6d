"""Shared fixtures: the tiny offline Qwen2.5-VL and a small synthetic benchmark, each built once per session; the
GRPO recipe, a 4-query train file and a finished 2-step run, built once per test module that asks for them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from run_fixtures import FAST, grpo_args, small_train

import invert4tvg  # noqa: F401  (first: makes the CUDA-only torchvision wheel importable on CPU torch)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Frames of the "tiny" synthetic preset (56x56) kept at that size: the default 16*28*28 floor would upscale them.
TINY_SAMPLING = {"min_pixels": 3136, "total_pixels": 200704}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from invert4tvg.policy.tiny_qwen import build_tiny_model

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


# Command lines of the processes a local Ray starts.
RAY_MARKERS = ("ray::", "raylet", "gcs_server", "/ray/_private/", "/ray/dashboard/", "default_worker.py")


def ray_processes() -> dict[int, str]:
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmd = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(marker in cmd for marker in RAY_MARKERS):
            found[int(pid)] = cmd[:120]
    return found


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray for one test module (its pools join it instead of starting their own); on teardown Ray is shut
    down and no Ray process started here may survive."""
    import ray

    from invert4tvg.rollout import cluster

    before = ray_processes()
    started = cluster.connect(None, num_cpus=6)  # logical CPUs: a fixture pool and a run's pool at once
    yield ray
    cluster.shutdown(started)
    deadline = time.monotonic() + 15
    while (
        left := {p: c for p, c in ray_processes().items() if p not in before}
    ) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not left, f"Ray processes left behind: {left}"


@pytest.fixture(scope="module")
def grpo():
    from invert4tvg.workflows.recipe_loader import load_recipe

    return load_recipe("grpo_qwen25vl")


@pytest.fixture(scope="module")
def train_file(tiny_bench, tmp_path_factory):
    return small_train(tiny_bench, tmp_path_factory.mktemp("data") / "train4.json", 4)


@pytest.fixture(scope="module")
def finished(grpo, tiny_bench, tiny_model_dir, train_file, tmp_path_factory):
    """A finished 2-step run with checkpoints step_1 and step_2."""
    out = tmp_path_factory.mktemp("finished") / "run"
    grpo.main(grpo_args(tiny_bench, train_file, tiny_model_dir, out, "--max_steps", "2", *FAST))
    return out
