"""What keeps several training processes in lockstep: every process takes part in every step with a full share.

DDP runs collectives (buffer broadcast in ``forward``, gradient all-reduce in ``backward``) that every process must
enter the same number of times; a process that skips a step or runs fewer micro-batches crashes the others (gloo) or
hangs them (NCCL). So:

- every process gets exactly ``per_device_train_batch_size`` records (:class:`~invert4tvg.training.stream.BatchStream`
  wraps around at the end of an epoch);
- a record whose video fails to decode is replaced by another record with the same task (:func:`load_share`), drawn
  from a generator seeded by (seed, step, process), so a resumed run replaces it the same way;
- the decode failures are shared, so every process holds the same :class:`VideoFailureBudget` and stops together;
- a step that still lacks a full share on some process is skipped by all of them (:func:`all_processes`).

The task draws never diverge: every process draws the tasks of the whole global batch from the same generator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from invert4tvg.data.cache import FrameCache
from invert4tvg.training.batch_videos import VideoFailureBudget, decode_or_skip

logger = logging.getLogger(__name__)

MAX_REPLACEMENT_TRIES = 8


@dataclass
class LoadedShare:
    """This process's task instances with their decoded videos, in batch order."""

    instances: list
    videos: list
    failures: dict[str, str] = field(default_factory=dict)  # video path -> reason, this process, this step
    decoded: int = 0
    replaced: int = 0
    bad_videos: list[str] = field(default_factory=list)  # first found unreadable this step, all processes


def load_share(
    records: Sequence[Any],
    tasks: Sequence[str],
    build_instances: Callable[[Sequence[Any], Sequence[str]], list],
    cache: FrameCache | None,
    pool: Sequence[Any],
    rng: np.random.Generator,
    known_bad: set[str] | frozenset[str] = frozenset(),
    max_tries: int = MAX_REPLACEMENT_TRIES,
) -> LoadedShare:
    """Build and decode the instances of ``records``; each one whose video fails is replaced by a record of ``pool``
    (drawn with ``rng``, skipping known-bad videos) built with the same task, up to ``max_tries`` draws per slot.
    Slots that stay empty are dropped (the caller then skips the step on every process)."""
    failures: dict[str, str] = {}
    share = LoadedShare([], [], failures)
    for instance, task in zip(build_instances(records, tasks), tasks):
        video = decode_or_skip(instance, cache, failures)
        tries = 0
        while video is None and tries < max_tries:
            tries += 1
            candidate = pool[int(rng.integers(len(pool)))]
            if str(candidate.video) in known_bad or str(candidate.video) in failures:
                continue
            instance = build_instances([candidate], [task])[0]
            video = decode_or_skip(instance, cache, failures)
            share.replaced += video is not None
        if video is not None:
            share.instances.append(instance)
            share.videos.append(video)
    share.decoded = len(share.instances)
    return share


def replacement_rng(seed: int, step: int, process_index: int) -> np.random.Generator:
    """Stateless per (seed, step, process): nothing to checkpoint, and a resumed run draws the same replacements."""
    return np.random.default_rng([seed, step, process_index, 0x5EED])


def gather_objects(accelerator, obj: Any) -> list[Any]:
    """One ``obj`` per process, in process order (just ``[obj]`` with one process)."""
    if accelerator.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


def record_failures(accelerator, budget: VideoFailureBudget, share: LoadedShare) -> None:
    """Count every process's decode results in ``budget`` (the same on all processes, so all stop together)."""
    shares = gather_objects(accelerator, (share.decoded, share.failures))
    failures: dict[str, str] = {}
    for _, found in shares:
        failures.update(found)
    budget.record(sum(n for n, _ in shares), failures)


def all_processes(accelerator, flag: bool) -> bool:
    """True only when ``flag`` holds on every process."""
    if accelerator.num_processes == 1:
        return flag
    flags = accelerator.gather(torch.tensor([int(flag)], device=accelerator.device))
    return bool(flags.min().item())


def reduce_sum(accelerator, values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over processes of a 1-D tensor."""
    if accelerator.num_processes == 1:
        return values
    return accelerator.reduce(values.to(accelerator.device), reduction="sum")
