"""Deterministic, resumable batches of records across epochs and processes.

Every process computes the same per-epoch permutation (seed + epoch) and takes its own slice of each global batch,
so no data is exchanged between processes and ``state_dict()`` (epoch, position) is all a resume needs, including
at an epoch boundary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Generic, TypeVar

import numpy as np

from invert4tvg.errors import UserError

T = TypeVar("T")


class StreamStateError(UserError, ValueError):
    """A saved data position that does not belong to this run's data."""


def position_after(steps: int, size: int, global_batch_size: int) -> tuple[int, int]:
    """(epoch, position) of a stream of ``size`` records after ``steps`` batches of ``global_batch_size``: one batch
    per step, the last of an epoch shorter (what :meth:`BatchStream.next_batch` does)."""
    if steps <= 0:
        return 0, 0
    per_epoch = math.ceil(size / global_batch_size)
    epoch = (steps - 1) // per_epoch
    return epoch, min((steps - epoch * per_epoch) * global_batch_size, size)


class BatchStream(Generic[T]):
    def __init__(
        self,
        items: Sequence[T],
        batch_size: int,
        seed: int,
        num_processes: int = 1,
        process_index: int = 0,
        shuffle: bool = True,
    ) -> None:
        if not items:
            raise ValueError("no training records: check the annotation files and the data check report")
        self.items = items
        self.batch_size = batch_size  # per process
        self.seed = seed
        self.num_processes = num_processes
        self.process_index = process_index
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0  # index into the epoch's permutation

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_processes

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.items) / self.global_batch_size)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.items))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.items))

    def next_batch(self) -> list[T]:
        """This process's share of the next global batch.

        With one process the last batch of an epoch may be smaller. With several, every process must take part in
        every step (DDP's collectives would otherwise hang or crash), so a short last batch is filled up by wrapping
        around to the start of the epoch's order (what accelerate's ``even_batches`` does): every share has exactly
        ``batch_size`` records and a few records are seen twice in that epoch.
        """
        if self.position >= len(self.items):
            self.epoch += 1
            self.position = 0
        order = self._order(self.epoch)
        window = order[self.position : self.position + self.global_batch_size]
        self.position += len(window)
        if self.num_processes == 1:
            return [self.items[i] for i in window]
        if len(window) < self.global_batch_size:
            window = np.resize(np.concatenate([window, order]), self.global_batch_size)
        share = window[self.process_index * self.batch_size : (self.process_index + 1) * self.batch_size]
        return [self.items[i] for i in share]

    @property
    def epoch_progress(self) -> float:
        return self.epoch + self.position / len(self.items)

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "size": len(self.items),
            "global_batch_size": self.global_batch_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["size"] != len(self.items) or state["seed"] != self.seed:
            raise StreamStateError(
                f"checkpoint was taken on {state['size']} records with seed {state['seed']}, this run has "
                f"{len(self.items)} with seed {self.seed}: resume with the same data and seed"
            )
        self.epoch, self.position = state["epoch"], state["position"]
