"""A run directory: its metadata (config, versions, NLP backend) and its metric log.

Layout, read by ``invert4tvg report``::

    RUN/metadata.json     run_name, setting, seed, p, invert_tasks, reward, model, dataset, versions, nlp_backend, config
    RUN/metrics.jsonl     one JSON object per logged step (training and validation metrics)
    RUN/checkpoints/      resumable checkpoints (see invert4tvg/grpo/checkpoint.py)
    RUN/final/            the trained model (save_pretrained layout; adapters when LoRA)
    RUN/eval/             final evaluation (metrics.json, predictions.jsonl)
"""

from __future__ import annotations

import json
import logging
import math
import platform
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

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
    from rewards.nlp import backend_name

    meta = {"versions": versions(), "nlp_backend": backend_name(), **fields}
    path = Path(run_dir) / "metadata.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return meta


class MetricsLog:
    """Appends metric rows to ``RUN/metrics.jsonl`` and forwards numbers to accelerate's trackers
    (TensorBoard by default, W&B when configured). Only the main process writes."""

    def __init__(self, run_dir: str | Path, accelerator=None, is_main: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.accelerator = accelerator
        self.is_main = is_main
        if is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, row: dict[str, Any], step: int) -> None:
        if not self.is_main:
            return
        row = {"step": step, **row}
        with self.path.open("a") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")
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
        kept = [
            line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step
        ]
        self.path.write_text("".join(line + "\n" for line in kept))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
