"""A run directory: its metadata (config, versions, NLP backend) and its metric log.

Layout, read by ``invert4tvg report``::

    RUN/metadata.json     run_name, setting, seed, p, invert_tasks, reward, model, dataset, versions, nlp_backend, config
    RUN/metrics.jsonl     one JSON object per logged step (training and validation metrics)
    RUN/checkpoints/      resumable checkpoints (see invert4tvg/training/checkpoint.py)
    RUN/final/            the trained model (save_pretrained layout; adapters when LoRA)
    RUN/eval/             final evaluation (metrics.json, predictions.jsonl)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from invert4tvg.training.disk import disk_guard
from rewards.nlp import backend_name

logger = logging.getLogger(__name__)

_PACKAGES = (
    "invert4tvg",
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "spacy",
    "ray",
    "av",
)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if commit.returncode == 0:
            found["git"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return found


def write_metadata(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Write ``RUN/metadata.json`` with the given fields plus versions and the active NLP backend."""

    meta = {"versions": versions(), "nlp_backend": backend_name(), **fields}
    path = Path(run_dir) / "metadata.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return meta


class MetricsLog:
    """Appends metric rows to ``RUN/metrics.jsonl`` and forwards numbers to accelerate's trackers
    (TensorBoard by default, W&B when configured). Only the main process writes.

    Each row goes out in one ``write`` on an ``O_APPEND`` descriptor; a write that fails (disk full) is cut back to
    the previous size, so it never leaves half a line for the next row to join. A torn last line left by a kill
    is dropped, with a warning, when the log is opened again (on resume) or read."""

    def __init__(self, run_dir: str | Path, accelerator=None, is_main: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.accelerator = accelerator
        self.is_main = is_main
        if is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and not _ends_with_newline(self.path):
                self._rewrite(_parse_rows(self.path))  # drops a torn last line

    def log(self, row: dict[str, Any], step: int) -> None:
        if not self.is_main:
            return

        row = {"step": step, **row}
        data = (json.dumps(row, default=_jsonable) + "\n").encode()
        with disk_guard(self.path, f"the metrics of step {step}"):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                try:
                    written = os.write(fd, data)
                    if written != len(data):
                        raise OSError(28, f"short write ({written} of {len(data)} bytes)")
                except OSError:
                    with contextlib.suppress(
                        OSError
                    ):  # not a regular file (a pipe, /dev/full): nothing to cut
                        os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
        if self.accelerator is not None and self.accelerator.trackers:
            numbers = {
                k: v
                for k, v in row.items()
                if isinstance(v, int | float) and math.isfinite(v) and k != "step"
            }
            self.accelerator.log(numbers, step=step)

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint so the log matches the restored state."""
        if not self.is_main or not self.path.exists():
            return
        self._rewrite([row for row in _parse_rows(self.path) if row["step"] <= step])

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(row, default=_jsonable) + "\n" for row in rows))
        os.replace(tmp, self.path)


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        if fh.seek(0, os.SEEK_END) == 0:
            return True
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _parse_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics log; a torn last line (a kill or a full disk mid-write) is dropped with a warning,
    any other unreadable line is an error naming it."""
    lines = path.read_text(errors="replace").split("\n")
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if lineno == len(lines):  # no newline after it: the write never finished
                logger.warning("%s: dropping a torn last line %d (%r...)", path, lineno, line[:40])
                continue
            raise ValueError(
                f"{path}, line {lineno}: not a JSON row ({err.msg}); fix or remove that line"
            ) from err
    return rows


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return _parse_rows(path) if path.exists() else []


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
