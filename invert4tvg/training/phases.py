"""Named, timed phases of a training step (verl's ``marked_timer``): the step reads as its phases, and each one's
wall-clock seconds are logged as ``time/<name>``, so where a step's time goes is in every metrics row."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StepTimer:
    """``with timer.phase("rollout"): ...``; :meth:`metrics` gives ``{"time/rollout": seconds, ...}`` (a phase
    entered twice in a step adds up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def metrics(self) -> dict[str, float]:
        return {f"time/{name}": seconds for name, seconds in self.seconds.items()}
