"""What a run may do with its ``output_dir``, decided before anything is written there.

- A fresh run needs an empty (or absent) ``output_dir``. Writing a second run into a finished one mixes them: its
  ``metrics.jsonl`` continues the other's, rotation keeps the other's newer checkpoints and
  ``--resume_from_checkpoint latest`` later resumes the wrong run. ``--overwrite_output_dir`` (transformers' name) replaces the run's own files; it
  deletes only those (see :data:`RUN_ENTRIES`), never other files in the directory.
- ``--resume_from_checkpoint`` continues a run: the checkpoint is found (``latest`` skips damaged ones) and the new
  configuration is compared with the one the checkpoint was written under, field by field, before ``metadata.json`` is touched.
  :data:`MAY_CHANGE_ON_RESUME` lists what may differ (and then applies as given); any other difference is refused
  with the list of fields, because the restored optimizer, scheduler, data position and RNG would silently keep
  the old values or no longer match them.
- ``final/`` is written beside its place and renamed into it, so an interrupted save never leaves a half model.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from invert4tvg.errors import UserError
from invert4tvg.policy import model_dir
from invert4tvg.training import checkpoint as ckpt
from invert4tvg.training.disk import disk_guard
from invert4tvg.training.guards import check_parameters

logger = logging.getLogger(__name__)

# The files and directories a run writes into output_dir (trackers' directories included, training/trackers.py).
RUN_ENTRIES = ("metadata.json", "metrics.jsonl", "checkpoints", "final", "eval", "tensorboard", "wandb")

# Fields a resume may change; the new value applies from the resumed step on. They decide where things are written,
# how often the run logs, saves and evaluates, and how the same computation is distributed or cached.
MAY_CHANGE_ON_RESUME = frozenset(
    {
        "output_dir", "resume_from_checkpoint", "overwrite_output_dir", "run_name", "setting", "report_to",
        "wandb_project", "wandb_entity",
        "logging_steps", "save_steps", "save_total_limit", "eval_steps", "eval_max_samples",
        "val_annotations", "test_annotations", "video_dir", "frame_cache_dir", "frame_cache_gb",
        "rollout_backend", "rollout_workers", "rollout_batch_sequences", "ray_address",
        "gradient_checkpointing", "attn_implementation", "max_bad_video_fraction",
        "vllm_gpu_memory_utilization", "vllm_enable_sleep_mode", "vllm_tensor_parallel_size", "vllm_enforce_eager",
    }
)  # fmt: skip
# The run's length may change only under a constant learning rate: linear and cosine schedules (and warmup) are laid
# out over the original length, and stretching them mid-run changes the learning rate of every remaining step.
LENGTH_FIELDS = frozenset({"max_steps", "num_train_epochs"})


class OutputDirError(UserError, ValueError):
    """output_dir, --resume_from_checkpoint and --overwrite_output_dir do not fit together; nothing was written."""


def prepare_output_dir(args: Any, config: dict[str, Any], is_main_process: bool = True) -> Path | None:
    """Check ``output_dir`` against ``--resume_from_checkpoint`` / ``--overwrite_output_dir`` and return the checkpoint
    to resume from (None for a fresh run). Raises :class:`OutputDirError` (or the checkpoint's error); writes and
    removes nothing: with ``overwrite_output_dir``, ``TrainingRun.begin`` (training/run.py) calls
    :func:`replace_previous_run` once the data and the model have loaded, so a run that fails to start leaves the
    previous one as it was."""
    out = Path(args.output_dir)
    overwrite = bool(getattr(args, "overwrite_output_dir", False))
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"output_dir {out} is a file, not a directory")
    if args.resume_from_checkpoint and overwrite:
        raise OutputDirError(
            "--resume_from_checkpoint continues the run in output_dir and --overwrite_output_dir replaces it: give "
            "one of them"
        )
    if args.resume_from_checkpoint:
        path = ckpt.find_checkpoint(out, args.resume_from_checkpoint).resolve()
        if path.parent.parent != out.resolve() and _run_entries(out):
            raise OutputDirError(
                f"output_dir {out} holds another run ({', '.join(_run_entries(out))}) than the checkpoint "
                f"{path}: resume into the checkpoint's own run directory ({path.parent.parent}) or an empty one"
            )
        check_resume_config(_checkpoint_config(path), config, path)
        return path
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries and not overwrite:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputDirError(
            f"output_dir {out} is not empty ({shown}). A new run there would mix with what is there; pass "
            "--resume_from_checkpoint latest to continue that run, --overwrite_output_dir true to replace it, or "
            "choose another output_dir"
        )
    return None


def replace_previous_run(args: Any) -> None:
    """With ``--overwrite_output_dir``, remove the previous run's files (main process only, just before the new run
    writes its first file)."""
    out = Path(args.output_dir)
    if getattr(args, "overwrite_output_dir", False) and out.is_dir() and any(out.iterdir()):
        clear_run(out)


def _run_entries(out: Path) -> list[str]:
    return [name for name in RUN_ENTRIES if (out / name).exists()]


def clear_run(out: Path) -> list[str]:
    """Remove a previous run's files from ``out`` (its entries and tracker directories) and nothing else."""
    names = list(_run_entries(out))
    try:
        run_name = json.loads((out / "metadata.json").read_text()).get("run_name")
    except (OSError, ValueError, AttributeError):
        run_name = None
    if run_name:  # runs written before the fixed tensorboard/ name kept TensorBoard under the run name
        legacy = str(run_name).replace("/", "_")
        if legacy not in ("", ".", "..") and (out / legacy).is_dir() and (out / legacy).parent == out:
            names.append(legacy)
    for name in names:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    kept = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    logger.warning(
        "--overwrite_output_dir: removed the previous run's %s from %s%s",
        ", ".join(names) or "nothing",
        out,
        f" (kept {', '.join(kept)})" if kept else "",
    )
    return names


def _checkpoint_config(path: Path) -> dict[str, Any] | None:
    """The configuration ``path`` was written under: its own copy of metadata.json, else its run's."""
    for meta in (path / "metadata.json", path.parent.parent / "metadata.json"):
        try:
            return json.loads(meta.read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def resume_differences(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(fields that differ and may, fields that differ and must not)."""
    new = json.loads(json.dumps(new, default=str))  # compare in the form metadata.json stores
    constant_lr = new.get("lr_scheduler_type") == "constant" and not new.get("warmup_ratio")
    allowed, refused = [], []
    for key in sorted(set(old) | set(new)):
        if key not in old or key not in new or old[key] == new[key]:
            continue  # a field added or retired between versions is not a difference of this run
        line = f"{key}: {old[key]!r} -> {new[key]!r}"
        if key in MAY_CHANGE_ON_RESUME or (key in LENGTH_FIELDS and constant_lr):
            allowed.append(line)
        else:
            refused.append(line)
    return allowed, refused


def check_resume_config(old: dict[str, Any] | None, new: dict[str, Any], path: Path) -> None:
    if old is None:
        logger.warning("%s has no recorded configuration: resuming without checking it", path)
        return
    allowed, refused = resume_differences(old, new)
    if refused:
        changeable = ", ".join(
            sorted(MAY_CHANGE_ON_RESUME - {"resume_from_checkpoint", "overwrite_output_dir"})
        )
        raise OutputDirError(
            f"--resume_from_checkpoint {path}: the checkpoint was written with a different configuration: "
            f"{'; '.join(refused)}. The restored optimizer, schedule, data order and RNG belong to the old values, "
            f"so a resume may change only {changeable} "
            "(and max_steps / num_train_epochs under a constant learning rate). Resume with the old values, or "
            "start a new run in another output_dir."
        )
    if allowed:
        logger.info("resuming with changed settings (applied from here on): %s", "; ".join(allowed))


def write_final(
    model: Any,
    processor: Any,
    out: str | Path,
    step: int,
    head_config: dict[str, Any] | None = None,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write ``OUT/final`` atomically: into ``OUT/.final.tmp``, then renamed (the old one goes only after).
    ``head_config`` (``Policy.head_config()``) is recorded so that loading ``final/`` needs no head option.
    ``state_dict``: the whole weights of a sharded model (checked finite by the caller), written in its place."""
    out = Path(out)
    final, tmp, old = out / "final", out / ".final.tmp", out / ".final.old"
    if state_dict is None:
        check_parameters(model, step, out, what="before saving final/ at step")
    with disk_guard(tmp, "final/"):
        shutil.rmtree(tmp, ignore_errors=True)
        model_dir.save(model, processor, tmp, head_config, state_dict=state_dict)
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    return final
