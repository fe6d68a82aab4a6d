"""The built-in rewards' base class, and the error policy for any reward callable (built-in or plugin).

A reward follows TRL's signature: ``fn(completions, **columns) -> list[float | None]``, each column a list with one
value per completion. ``None`` means "does not apply to this sample" (TRL skips it when summing rewards); the
built-ins return it for samples whose ``task`` column names another task.

Error policy (``on_error``): ``"raise"`` (default) fails fast with the reward name and sample index;
``"zero"`` scores the failing sample 0 and counts it in ``errors``. Configuration errors (a missing column, a
column of the wrong length) always raise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from rewards.completions import completion_text
from rewards.errors import (
    ColumnLengthError,
    ColumnValueError,
    MissingColumnError,
    RewardError,
    RewardOutputError,
    RewardSampleError,
)

# The inversion tasks (Invert4TVG sec. 2.2), the values of the ``task`` column besides ``tvg`` (grounding).
INVERSION_TASKS: tuple[str, ...] = ("vc", "ar", "vd")

ON_ERROR = ("raise", "zero")


def check_policy(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    return on_error


class Columns:
    """Per-sample column access with the reward's name in every error."""

    def __init__(self, reward: str, columns: Mapping[str, Any], n: int) -> None:
        self.reward = reward
        self._columns = columns
        self.n = n
        self._checked: set[str] = set()

    def has(self, name: str) -> bool:
        return self._columns.get(name) is not None

    def column(self, name: str) -> Sequence[Any]:
        values = self._columns.get(name)
        if values is None:
            raise MissingColumnError(
                self.reward, name, [k for k, v in self._columns.items() if v is not None]
            )
        if name not in self._checked:
            if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
                raise RewardError(
                    self.reward, f"column {name!r} must be a list with one value per completion"
                )
            if len(values) != self.n:
                raise ColumnLengthError(self.reward, name, len(values), self.n)
            self._checked.add(name)
        return values

    def value(self, name: str, i: int) -> Any:
        return self.column(name)[i]

    def number(self, name: str, i: int) -> float:
        raw = self.value(name, i)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ColumnValueError(name, f"expected a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ColumnValueError(name, f"expected a finite number, got {raw!r}")
        return value

    def text(self, name: str, i: int) -> str:
        raw = self.value(name, i)
        if not isinstance(raw, str):
            raise ColumnValueError(name, f"expected a string, got {type(raw).__name__}")
        return raw


class Reward:
    """Base of the built-in rewards: column checks, task filtering, and per-sample error handling.

    Subclasses set ``name``, ``tasks`` (the ``task`` values they score; None for all) and ``columns`` (needed
    columns), and implement ``score_one``; ``prepare`` may do batched work first (NLP over all answers at once).
    """

    name: ClassVar[str] = ""
    tasks: ClassVar[frozenset[str] | None] = None
    columns: tuple[str, ...] = ()  # an instance may extend it (``iou`` with ``clip=True`` needs ``duration``)

    def __init__(self, *, on_error: str = "raise") -> None:
        self.on_error = check_policy(on_error)
        self.errors = 0  # samples scored 0 under on_error="zero"

    @property
    def __name__(self) -> str:  # TRL names reward functions by __name__ in its logs
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(on_error={self.on_error!r})"

    def prepare(self, texts: dict[int, str], cols: Columns) -> Any:
        return None

    def score_one(self, i: int, text: str, cols: Columns, prepared: Any) -> float:
        raise NotImplementedError

    def applies(self, cols: Columns) -> list[int]:
        if self.tasks is None or not cols.has("task"):
            return list(range(cols.n))
        tasks = cols.column("task")
        return [i for i in range(cols.n) if tasks[i] in self.tasks]

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        cols = Columns(self.name, columns, len(completions))
        for name in self.columns:
            cols.column(name)
        out: list[float | None] = [None] * cols.n
        texts: dict[int, str] = {}
        for i in self.applies(cols):
            try:
                texts[i] = completion_text(completions[i])
            except TypeError as err:
                out[i] = self._failed(i, err)
        if not texts:
            return out
        prepared = self.prepare(texts, cols)
        for i, text in texts.items():
            try:
                out[i] = self.score_one(i, text, cols, prepared)
            except RewardError:
                raise
            except Exception as err:
                out[i] = self._failed(i, err)
        return out

    def _failed(self, i: int, err: Exception) -> float:
        if self.on_error == "raise":
            raise RewardSampleError(self.name, i, err) from err
        self.errors += 1
        return 0.0


def _check_output(name: str, out: Any, n: int) -> list[float | None]:
    if not isinstance(out, (list, tuple)) or len(out) != n:
        got = f"{len(out)} values" if isinstance(out, (list, tuple)) else type(out).__name__
        raise RewardOutputError(name, f"must return a list of {n} floats (or None), got {got}")
    result: list[float | None] = []
    for i, value in enumerate(out):
        if value is None:
            result.append(None)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise RewardOutputError(name, f"sample {i}: returned {value!r}, not a number") from None
        if not math.isfinite(number):
            raise RewardOutputError(
                name, f"sample {i}: returned {number}; a reward must be a finite number (or None: not scored)"
            )
        result.append(number)
    return result


class GuardedReward:
    """Applies the error policy to any TRL-style reward callable, e.g. a plugin.

    When the batch call raises, the samples are re-scored one at a time to find which ones fail: "raise" reports
    the first failing index, "zero" scores each failing sample 0 and counts it in ``errors``.
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None, *, on_error: str = "raise") -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.on_error = check_policy(on_error)
        self.errors = 0

    @property
    def __name__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"GuardedReward({self.name!r}, on_error={self.on_error!r})"

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        n = len(completions)
        try:
            return _check_output(self.name, self.fn(completions=list(completions), **columns), n)
        except RewardError as err:
            if not isinstance(err, RewardSampleError) or self.on_error == "raise":
                raise
        except Exception as err:
            if n == 1:
                return self._failed_single(err)
        return [self._one(i, completions, columns) for i in range(n)]

    def _one(self, i: int, completions: Sequence[Any], columns: Mapping[str, Any]) -> float | None:
        row = {k: [v[i]] if _is_column(v, len(completions)) else v for k, v in columns.items()}
        try:
            return _check_output(self.name, self.fn(completions=[completions[i]], **row), 1)[0]
        except RewardSampleError as err:
            if self.on_error == "raise":
                raise RewardSampleError(self.name, i, err.cause) from err.cause
        except RewardError:
            raise
        except Exception as err:
            if self.on_error == "raise":
                raise RewardSampleError(self.name, i, err) from err
        self.errors += 1
        return 0.0

    def _failed_single(self, err: Exception) -> list[float | None]:
        if self.on_error == "raise":
            raise RewardSampleError(self.name, 0, err) from err
        self.errors += 1
        return [0.0]


def _is_column(value: Any, n: int) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == n
