"""Read training-run and evaluation directories into one shape for reports, and group seeds of one setting.

A training run directory holds ``metadata.json``, ``metrics.jsonl`` (one row per optimizer step) and optionally
``eval/`` (an evaluation directory). An evaluation directory holds ``metrics.json`` and ``predictions.jsonl``.
docs/evaluation.md describes both formats. Problems are reported with the file (and line) they come from: a
malformed line of a log is skipped with a warning (a run killed mid-write leaves a truncated last line), a
directory whose results cannot be read is skipped as a whole with the reason.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invert4tvg.eval.metrics import METRIC_KEYS, metrics_from_predictions

# Metadata keys that, with the setting name, decide which runs are seeds of the same experiment.
GROUP_KEYS: tuple[str, ...] = (
    "setting",
    "model",
    "dataset",
    "split",
    "p",
    "invert_tasks",
    "reward",
    "strict",
    "parser",
)


class ReportInputError(ValueError):
    """A run or evaluation directory that cannot be used; the message names the file."""


@dataclass
class RunResult:
    """One run (or one standalone evaluation): its metadata, final metrics and training log."""

    path: Path
    kind: str  # "run" (training run dir) or "eval" (evaluation dir)
    metadata: dict[str, Any]
    metrics: dict[str, Any] | None
    metrics_source: str | None  # where ``metrics`` came from, relative to ``path``; shown in the report
    curves: list[dict[str, Any]] = field(default_factory=list, repr=False)
    predictions_path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.metadata.get("run_name"):
            return str(self.metadata["run_name"])
        # A run's evaluation directory is called eval/: the run directory names it.
        return self.path.parent.name if self.path.name == "eval" else self.path.name

    @property
    def setting(self) -> str:
        return str(self.metadata.get("setting") or self.name)

    @property
    def seed(self) -> int | None:
        return self.metadata.get("seed")

    @property
    def strict(self) -> bool | None:
        return None if self.metrics is None else self.metrics.get("strict")

    @property
    def parser(self) -> str | None:
        """The span parser that produced the grounding numbers ("answer" when metrics.json predates the field)."""
        return None if self.metrics is None else str(self.metrics.get("parser") or "answer")

    @property
    def p(self) -> float | None:
        """TVG probability; a run that trains no inversion task has p = 1 even when it did not write it."""
        p = self.metadata.get("p")
        if p is None and self.metadata.get("setting") is not None and not self.invert_tasks:
            return 1.0 if self.metadata.get("setting") != "base" else None
        return None if p is None else float(p)

    @property
    def invert_tasks(self) -> tuple[str, ...]:
        """The inversion tasks the run trained: none at p = 1 (Time-R1), whatever its config listed."""
        p = self.metadata.get("p")
        if p is not None and float(p) >= 1.0:
            return ()
        return tuple(sorted(str(t).lower() for t in (self.metadata.get("invert_tasks") or ())))

    def data_dirs(self) -> list[Path]:
        """Existing directories named by the metadata's data fields, where relative video paths may be rooted."""
        found = []
        for key in ("data", "data_dir", "dataset_dir", "dataset", "video_root"):
            value = self.metadata.get(key)
            if isinstance(value, str) and value and Path(value).is_dir():
                found.append(Path(value))
        return found

    def group_key(self) -> tuple:
        values = {
            "setting": self.setting,
            "model": self.metadata.get("model"),
            "dataset": self.metadata.get("dataset"),
            "split": self.metadata.get("split"),
            "p": self.p,
            "invert_tasks": self.invert_tasks,
            "reward": self.metadata.get("reward") if self.invert_tasks else None,
            "strict": self.strict,
            "parser": self.parser,
        }
        return tuple((k, values[k]) for k in GROUP_KEYS)


@dataclass
class RunGroup:
    """Runs of one setting that differ only in their seed."""

    key: tuple
    runs: list[RunResult]
    label: str = ""

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.key)

    @property
    def setting(self) -> str:
        return str(self.attrs["setting"])

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    def metric_values(self, key: str) -> list[float | None]:
        return [None if r.metrics is None else r.metrics.get(key) for r in self.runs]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportInputError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
    except OSError as err:
        raise ReportInputError(f"{path}: cannot read ({err.strerror})") from err


def read_jsonl(path: Path, warnings: list[str]) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; malformed or non-object lines are skipped and named in ``warnings``."""
    rows: list[dict[str, Any]] = []
    with path.open() as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                warnings.append(f"{path}:{lineno}: not valid JSON ({err.msg}); line skipped")
                continue
            if not isinstance(row, dict):
                warnings.append(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}; line skipped"
                )
                continue
            rows.append(row)
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def validate_metrics(metrics: Any, path: Path) -> dict[str, Any]:
    """Check a ``metrics.json`` payload: metric values are percentages or null."""
    if not isinstance(metrics, dict):
        raise ReportInputError(f"{path}: expected a JSON object, got {type(metrics).__name__}")
    for key in METRIC_KEYS:
        value = metrics.get(key)
        if value is None:
            continue
        if not _is_number(value) or not 0.0 <= value <= 100.0:
            raise ReportInputError(f"{path}: {key} = {value!r}, expected a percentage in [0, 100] or null")
    if not any(_is_number(metrics.get(k)) for k in METRIC_KEYS):
        raise ReportInputError(f"{path}: none of {', '.join(METRIC_KEYS)} is present")
    meta = metrics.get("metadata", {})
    if not isinstance(meta, dict):
        raise ReportInputError(f"{path}: 'metadata' must be an object")
    return metrics


def _curve_rows(path: Path, warnings: list[str]) -> list[dict[str, Any]]:
    """metrics.jsonl rows with numeric values only; a row without ``step`` takes its position."""
    rows = []
    for i, raw in enumerate(read_jsonl(path, warnings)):
        row = {k: v for k, v in raw.items() if _is_number(v) or k == "task"}
        row.setdefault("step", i)
        rows.append(row)
    return rows


def _last_validation(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], int] | None:
    """The last validation row's metrics (``eval/*`` keys), with its step."""
    for row in reversed(rows):
        values = {k[len("eval/") :]: row[k] for k in row if k.startswith("eval/")}
        if any(k in values for k in METRIC_KEYS):
            return {k: values.get(k) for k in METRIC_KEYS}, int(row["step"])
    return None


def load_eval_dir(path: Path) -> RunResult:
    """An evaluation directory (``metrics.json`` [+ ``predictions.jsonl``])."""
    metrics_path = path / "metrics.json"
    predictions = path / "predictions.jsonl"
    warnings: list[str] = []
    if metrics_path.is_file():
        metrics = validate_metrics(_read_json(metrics_path), metrics_path)
        source = "metrics.json"
    elif predictions.is_file():
        # The evaluator was stopped before writing metrics.json: recompute from the predictions it wrote.

        rows = read_jsonl(predictions, warnings)
        if not rows:
            raise ReportInputError(f"{predictions}: no readable predictions")
        metrics = metrics_from_predictions(rows)
        source = "predictions.jsonl (recomputed: no metrics.json)"
    else:
        raise ReportInputError(f"{path}: neither metrics.json nor predictions.jsonl found")
    return RunResult(
        path=path,
        kind="eval",
        metadata=dict(metrics.get("metadata") or {}),
        metrics=metrics,
        metrics_source=source,
        predictions_path=predictions if predictions.is_file() else None,
        warnings=warnings,
    )


def load_run_dir(path: Path) -> RunResult:
    """A training run directory; its final metrics come from ``eval/`` or else the last validation row."""
    warnings: list[str] = []
    meta_path = path / "metadata.json"
    metadata: dict[str, Any] = {}
    if meta_path.is_file():
        metadata = _read_json(meta_path)
        if not isinstance(metadata, dict):
            raise ReportInputError(f"{meta_path}: expected a JSON object")
    else:
        warnings.append(f"{meta_path}: missing; the run is named after its directory")
    log_path = path / "metrics.jsonl"
    curves = _curve_rows(log_path, warnings) if log_path.is_file() else []
    metrics: dict[str, Any] | None = None
    source: str | None = None
    predictions: Path | None = None
    eval_dir = path / "eval"
    if eval_dir.is_dir():
        result = load_eval_dir(eval_dir)
        warnings.extend(result.warnings)
        metrics, predictions = result.metrics, result.predictions_path
        source = f"eval/{result.metrics_source}"
        # The evaluation knows what it evaluated (dataset, split); the run knows how it was trained.
        metadata = {**metadata, **{k: v for k, v in result.metadata.items() if v is not None}}
    else:
        last = _last_validation(curves)
        if last is not None:
            metrics = {**last[0], "strict": None}
            source = f"metrics.jsonl (last validation, step {last[1]}; no eval/)"
    if metrics is None and not curves:
        raise ReportInputError(f"{path}: no eval/ results, no validation rows and no metrics.jsonl")
    return RunResult(path, "run", metadata, metrics, source, curves, predictions, warnings)


def load_dir(path: str | Path) -> RunResult:
    """A run or evaluation directory, recognised by its files."""
    path = Path(path)
    if not path.is_dir():
        raise ReportInputError(f"{path}: not a directory")
    if (path / "metadata.json").is_file() or (path / "metrics.jsonl").is_file():
        return load_run_dir(path)
    if (path / "metrics.json").is_file() or (path / "predictions.jsonl").is_file():
        return load_eval_dir(path)
    raise ReportInputError(
        f"{path}: not a run directory (metadata.json / metrics.jsonl) nor an evaluation directory "
        "(metrics.json / predictions.jsonl)"
    )


def load_dirs(paths: Sequence[str | Path]) -> tuple[list[RunResult], list[str]]:
    """Load every directory that can be read; the second value lists the ones skipped, with the reason."""
    results: list[RunResult] = []
    skipped: list[str] = []
    for p in paths:
        try:
            results.append(load_dir(p))
        except ReportInputError as err:
            skipped.append(str(err))
    # RUN and RUN/eval given together are one run, not two seeds.
    owned = {(r.path / "eval").resolve(): r for r in results if r.kind == "run"}
    kept = []
    for r in results:
        owner = owned.get(r.path.resolve()) if r.kind == "eval" else None
        if owner is not None:
            skipped.append(f"{r.path}: already read as the evaluation of {owner.path}")
        else:
            kept.append(r)
    return kept, skipped


def _describe(value: Any) -> str:
    if isinstance(value, tuple):
        return "+".join(t.upper() for t in value) if value else "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _difference(name: str, value: Any) -> str | None:
    """How a label tells a group from same-named ones, in the words of the report (None: says nothing)."""
    if name == "split":
        return "validation during training" if value is None else f"split={value}"
    if name == "strict":
        return None if value is None else ("IoU > m" if value else "IoU >= m")
    if name == "invert_tasks":
        return f"tasks={_describe(value)}"
    return None if value is None else f"{name}={_describe(value)}"


def group_runs(runs: Sequence[RunResult]) -> list[RunGroup]:
    """Group seeds of the same setting; labels name the setting plus whatever tells same-named groups apart."""
    by_key: dict[tuple, list[RunResult]] = {}
    for run in runs:
        by_key.setdefault(run.group_key(), []).append(run)
    groups = [
        RunGroup(k, sorted(v, key=lambda r: (r.seed is None, r.seed or 0, r.name))) for k, v in by_key.items()
    ]
    for g in groups:
        twins = [o for o in groups if o.setting == g.setting]
        extras = [
            text
            for name, value in g.key
            if name != "setting"
            and len({dict(o.key)[name] for o in twins}) > 1
            and (text := _difference(name, value))
        ]
        g.label = g.setting + (f" [{', '.join(extras)}]" if extras else "")
    seen: dict[str, int] = {}
    for g in groups:  # labels key tables and plot colours: they must stay unique
        seen[g.label] = seen.get(g.label, 0) + 1
        if seen[g.label] > 1:
            g.label += f" #{seen[g.label]}"
    order = {"base": 0, "time_r1": 1, "invert4tvg": 2}
    groups.sort(
        key=lambda g: (
            order.get(g.setting, 3),
            g.setting,
            g.attrs["p"] is None,
            -(g.attrs["p"] or 0),
            g.label,
        )
    )
    return groups


_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z0-9])")


def model_size(model: str | None) -> str | None:
    """``"3B"`` from names such as ``Qwen/Qwen2.5-VL-3B-Instruct``; None when the name has no size."""
    if not model:
        return None
    found = _SIZE.findall(str(model))
    return f"{found[-1]}B" if found else None


def normalize_dataset(name: str | None) -> str:
    """``Charades-STA``, ``charades_sta``, ``charades-sta`` all compare equal."""
    return re.sub(r"[^a-z0-9]", "", str(name or "").lower())
