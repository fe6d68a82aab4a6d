"""The experiment trackers named by ``report_to`` (TensorBoard, W&B), started the same way by both recipes.

- A tracker that is asked for but not installed is an error at parse time (transformers raises too); accelerate
  alone would warn and train untracked.
- TensorBoard writes to ``OUTPUT_DIR/tensorboard/`` (``tensorboard --logdir OUTPUT_DIR``, or ``--logdir runs`` to
  compare runs by their directories). The name is fixed: a run name never becomes a path, so ``--run_name ..``
  cannot send event files outside ``output_dir``.
- W&B: the project is ``wandb_project``, else ``WANDB_PROJECT``, else ``invert4tvg`` (one project for all runs,
  not one per run); the entity is ``wandb_entity``, else ``WANDB_ENTITY``; the W&B run name is the run name; its
  local files go to ``OUTPUT_DIR/wandb/`` (not ``./wandb`` of the working directory).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"  # under output_dir
WANDB_DIR = "wandb"  # under output_dir (wandb.init's dir)
DEFAULT_WANDB_PROJECT = "invert4tvg"


def run_name(args: Any) -> str:
    return args.run_name or args.output_dir


def wandb_settings(args: Any) -> dict[str, Any]:
    """``wandb.init`` keywords: project, entity (when set) and the run's name."""
    settings = {
        "project": args.wandb_project or os.environ.get("WANDB_PROJECT") or DEFAULT_WANDB_PROJECT,
        "name": run_name(args),
        "dir": str(Path(args.output_dir)),  # wandb adds its own wandb/ under it
    }
    entity = args.wandb_entity or os.environ.get("WANDB_ENTITY")
    if entity:
        settings["entity"] = entity
    return settings


def log_with(args: Any) -> list[Any] | None:
    """``Accelerator(log_with=...)``: W&B as a tracker object, so its project is not the TensorBoard directory's
    name (accelerate gives both the same ``project_name``)."""
    trackers: list[Any] = []
    for name in args.report_to:
        if name == "wandb":
            from accelerate.tracking import WandBTracker

            settings = wandb_settings(args)
            trackers.append(WandBTracker(settings.pop("project"), **settings))
        else:
            trackers.append(name)
    return trackers or None


def start_trackers(accelerator, args: Any, config: dict[str, Any]) -> None:
    """Start the trackers and record the configuration as hyperparameters (main process only)."""
    if not args.report_to:
        return
    # accelerate's TensorBoard tracker writes to project_dir / <this name>: a fixed one, never the run name
    accelerator.init_trackers(TENSORBOARD_DIR, config=tracker_config(config))


def tracker_config(config: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters as TensorBoard accepts them (scalars and strings only)."""
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in config.items()}
