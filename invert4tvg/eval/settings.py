"""Which data, prompt and video settings an evaluation uses: by default the ones the model was trained with.

A model directory written by a recipe sits in a run directory whose ``metadata.json`` holds the whole training
configuration (``RUN/final`` -> ``RUN/metadata.json``; a checkpoint's ``step_N/model`` -> ``step_N/metadata.json``).
Evaluating with other prompts or another frame sampling than training used measures a different model (a tiny
model trained on short prompts scores 0 on the default ones), so ``invert4tvg eval`` reads that configuration when
no ``--config`` is given, and warns when a ``--config`` differs from it in what the model sees.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# What the model sees: a difference here changes the measured quality, not just where files are read from.
SEEN_FIELDS = (
    "prompt_templates",
    "verb_mask",
    "aspectual_verbs",
    "video_fps",
    "video_min_frames",
    "video_max_frames",
    "video_total_pixels",
    "video_min_pixels",
    "video_max_pixels",
)


# What names the training run in reports: an evaluation of its model is reported as that run (setting, seed, ...).
IDENTITY_FIELDS = ("run_name", "setting", "seed", "p", "invert_tasks", "reward")


def _run_metadata(model: str | Path) -> tuple[dict[str, Any], Path] | None:
    model = Path(model)
    for directory in (model, model.parent):
        path = directory / "metadata.json"
        if not path.is_file():
            continue
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            logger.warning("%s is unreadable (%s): not using the run's configuration", path, err)
            return None
        if isinstance(meta, dict) and isinstance(meta.get("config"), dict):
            return meta, path
    return None


def training_config(model: str | Path) -> tuple[dict[str, Any], Path] | None:
    """The training configuration stored next to ``model`` and the metadata file it came from, or None (a hub
    id, or a directory no recipe wrote)."""
    found = _run_metadata(model)
    return None if found is None else (found[0]["config"], found[1])


def run_identity(model: str | Path) -> dict[str, Any]:
    """The training run's name, setting, seed, p, inversion tasks and reward, for the evaluation's metadata."""
    found = _run_metadata(model)
    if found is None:
        return {}
    return {k: found[0][k] for k in IDENTITY_FIELDS if found[0].get(k) is not None}


def apply(config: dict[str, Any], *targets: Any) -> None:
    """Set every field of the ``targets`` dataclasses that ``config`` holds."""
    for target in targets:
        for field in dataclasses.fields(target):
            if field.name in config:
                setattr(target, field.name, config[field.name])


def differences(trained: dict[str, Any], *targets: Any) -> list[str]:
    """``field: evaluation value (training value)`` for each setting the model sees that differs."""
    found = []
    for target in targets:
        for name in SEEN_FIELDS:
            if hasattr(target, name) and name in trained and getattr(target, name) != trained[name]:
                found.append(f"{name}: {getattr(target, name)!r} (training: {trained[name]!r})")
    return found
