"""How a generation batch is split across rollout workers, and the seeds that make a split reproducible.

A request (one prompt, its video, ``num_samples`` completions) is never split: its video travels to one worker
once and all its samples come from there. Requests are assigned longest-first to the least-loaded worker, with
the cost of a request estimated from its prompt and video size, so a worker with two long videos does not hold up
one with two short ones. The plan is a pure function of the batch, so a retried shard is the same shard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from invert4tvg.rollout.base import RolloutRequest

# Qwen2.5-VL: 14 px patches merged 2x2 into one token (28 px), two frames per temporal patch.
_PIXELS_PER_TOKEN_SIDE = 28
_FRAMES_PER_TOKEN = 2
_CHARS_PER_TOKEN = 4  # rough; only relative costs matter


def prompt_tokens(request: RolloutRequest) -> int:
    """An estimate of the prompt's length in tokens, video placeholders expanded."""
    tokens = math.ceil(len(request.prompt) / _CHARS_PER_TOKEN)
    if request.video is not None:
        frames, height, width = request.video.frames.shape[:3]
        tokens += (
            math.ceil(frames / _FRAMES_PER_TOKEN)
            * max(height // _PIXELS_PER_TOKEN_SIDE, 1)
            * max(width // _PIXELS_PER_TOKEN_SIDE, 1)
        )
    return tokens


def expected_work(request: RolloutRequest, max_tokens: int) -> float:
    """Relative cost of generating a request: each sample reads the prompt and writes up to ``max_tokens``."""
    return float(request.num_samples * (prompt_tokens(request) + max_tokens))


def plan_shards(costs: Sequence[float], num_workers: int) -> list[list[int]]:
    """Indices of the requests each worker generates (longest-processing-time-first; ties go to the lower
    index). Every shard lists its requests in their original order; shards may be empty."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    loads = [0.0] * num_workers
    shards: list[list[int]] = [[] for _ in range(num_workers)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        worker = min(range(num_workers), key=lambda w: (loads[w], w))
        shards[worker].append(index)
        loads[worker] += costs[index]
    return [sorted(shard) for shard in shards]


def shard_seed(*keys: int) -> int:
    """A 31-bit seed derived from integer keys (e.g. run seed, policy version, call, shard): the same keys give
    the same seed in any process, so a shard retried on a restarted worker samples the same completions."""
    entropy = [int(k) & 0xFFFFFFFF for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0] >> 1)
