"""Errors raised by rewards. Every message names the reward, and the sample index and column where there is one."""

from __future__ import annotations


class RewardError(Exception):
    """Base class. ``reward`` is the registry name of the reward that failed."""

    def __init__(self, reward: str, message: str) -> None:
        super().__init__(f"reward {reward!r}: {message}")
        self.reward = reward


class MissingColumnError(RewardError, KeyError):
    """A column the reward needs is not in the batch. A configuration error: never scored as 0."""

    def __init__(self, reward: str, column: str, available: list[str] | None = None) -> None:
        extra = f" (columns given: {', '.join(sorted(available))})" if available is not None else ""
        RewardError.__init__(self, reward, f"needs column {column!r}, which is missing{extra}")
        self.column = column

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class ColumnLengthError(RewardError, ValueError):
    """A column does not have one value per completion."""

    def __init__(self, reward: str, column: str, got: int, expected: int) -> None:
        super().__init__(reward, f"column {column!r} has {got} values for {expected} completions")
        self.column = column


class ColumnValueError(ValueError):
    """Raised inside a reward for one sample's bad column value; the caller adds reward name and index."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(f"column {column!r}: {message}")
        self.column = column


class RewardSampleError(RewardError):
    """Scoring one sample failed (fail-fast policy). ``index`` is the sample's position in the batch."""

    def __init__(self, reward: str, index: int, cause: BaseException) -> None:
        super().__init__(reward, f"sample {index}: {type(cause).__name__}: {cause}")
        self.index = index
        self.cause = cause
        self.column = getattr(cause, "column", None)


class RewardOutputError(RewardError):
    """A reward returned something that is not one float (or None) per completion."""
