"""Resumable checkpoints shared by the GRPO and SFT loops.

``RUN/checkpoints/step_N/`` holds the model in ``save_pretrained`` layout (safetensors; only the adapters with
LoRA) plus the processor, the optimizer and scheduler states, every process's RNG states, and
``trainer_state.json`` (step, data position, task sampler, counters), a copy of the run's ``metadata.json`` (the
configuration a resume is checked against) and ``manifest.json`` (every file's size, written last). A checkpoint
is written to a temporary directory and renamed, so a crash mid-save never leaves a half checkpoint that
``--resume_from_checkpoint latest`` would pick; one damaged later (a truncated or emptied file) fails the manifest
check and ``latest`` falls back to the previous one.

Nothing here is unpickled: optimizer, scheduler and RNG states are loaded with ``torch.load(weights_only=True)``
(tensors and plain containers only), so a crafted checkpoint cannot run code on ``--resume_from_checkpoint``.
"""

from __future__ import annotations

import json
import logging
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invert4tvg.errors import UserError
from invert4tvg.policy import model_dir
from invert4tvg.training import sharded_checkpoint
from invert4tvg.training.disk import disk_guard
from invert4tvg.training.fsdp import is_sharded
from invert4tvg.training.stream import position_after

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step_(\d+)$")
MANIFEST = "manifest.json"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used: missing, damaged, or holding more than tensors."""


def rng_state() -> dict[str, Any]:
    """Every RNG as tensors and plain numbers (loadable with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def safe_load(path: Path) -> Any:
    """``torch.load`` that only accepts tensors and plain containers; anything else is refused, never run."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects other than tensors and plain values, and "
            "unpickling them could run arbitrary code. Only resume from checkpoints this version of invert4tvg "
            f"wrote. ({str(err).splitlines()[0][:200]})"
        ) from err
    except (EOFError, RuntimeError, OSError) as err:
        raise CheckpointError(f"{path} is damaged or unreadable: {err}") from err


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    accelerator,
    model: torch.nn.Module,
    processor,
    optimizer: torch.optim.Optimizer,
    scheduler,
    trainer_state: dict[str, Any],
    save_total_limit: int | None = None,
    head_config: dict[str, Any] | None = None,
) -> Path:
    """``run_dir/checkpoints/step_N``: weights (+ the head's record, ``head_config``), optimizer, scheduler,
    trainer state and every process's RNG; written to a temporary name and renamed when complete. The caller checks
    the weights are finite first (``TrainerBase.save``)."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step}"
    tmp = root / f".step_{step}.tmp"
    unwrapped = accelerator.unwrap_model(model)
    with disk_guard(tmp, f"checkpoint step_{step}"):
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        sharded = is_sharded(unwrapped)
        if sharded:  # FSDP2: every process writes its shards of the weights and optimizer state
            sharded_checkpoint.save_state(tmp, unwrapped, optimizer)
        if accelerator.is_main_process:
            if (
                sharded
            ):  # the weights are the shards; the directory keeps the config, processor and head record
                model_dir.save(unwrapped, processor, tmp / "model", head_config, weights=False)
            else:
                model_dir.save(unwrapped, processor, tmp / "model", head_config)
                torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            (tmp / "trainer_state.json").write_text(
                json.dumps({"step": step, **trainer_state}, indent=2) + "\n"
            )
            if (Path(run_dir) / "metadata.json").is_file():
                shutil.copyfile(Path(run_dir) / "metadata.json", tmp / "metadata.json")
        torch.save(rng_state(), tmp / f"rng_state_{accelerator.process_index}.pt")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _write_manifest(tmp)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            _rotate(root, save_total_limit, keep=final)
            logger.info("checkpoint saved: %s", final)
    accelerator.wait_for_everyone()
    return final


def _rotate(root: Path, limit: int | None, keep: Path) -> None:
    """Keep the newest ``limit`` checkpoints, and always the one just written."""
    if not limit:
        return
    for old in list_checkpoints(root)[:-limit]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def _write_manifest(ckpt: Path) -> None:
    files = [p for p in sorted(ckpt.rglob("*")) if p.is_file() and p.name != MANIFEST]
    sizes = {str(p.relative_to(ckpt)): p.stat().st_size for p in files}
    (ckpt / MANIFEST).write_text(json.dumps({"files": sizes}, indent=1) + "\n")


def verify_checkpoint(path: Path) -> str | None:
    """Why ``path`` is not a usable checkpoint (a missing or truncated file), or None when it is complete."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return f"no {MANIFEST} (an interrupted or pre-manifest save)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{MANIFEST} is unreadable ({err})"
    for name, size in manifest.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, {size} were written"
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        state["step"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"trainer_state.json is unreadable ({err})"
    return state_problem(path, state)


def state_problem(path: Path, state: dict[str, Any]) -> str | None:
    """Why ``trainer_state.json`` disagrees with itself or its checkpoint: the step must be the one in the
    directory's name and the data position the one that many steps reach (an edited or foreign state would resume
    a run that trains nothing, or the wrong records)."""
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"trainer_state.json: step {step!r} is not a step number"
    named = _STEP_DIR.match(path.name)
    if named and int(named.group(1)) != step:
        return f"trainer_state.json says step {step}, the directory {path.name}"
    stream = state.get("stream")
    if isinstance(stream, dict) and {"size", "global_batch_size", "epoch", "position"} <= set(stream):
        expected = position_after(step, stream["size"], stream["global_batch_size"])
        if (stream["epoch"], stream["position"]) != expected:
            return (
                f"trainer_state.json: data position (epoch {stream['epoch']}, record {stream['position']}) is not "
                f"where {step} steps of {stream['global_batch_size']} of {stream['size']} records end (epoch "
                f"{expected[0]}, record {expected[1]})"
            )
    total = state.get("total_steps")
    if isinstance(total, int) and step > total:
        return f"trainer_state.json: step {step} is past the run's {total} steps"
    return None


def list_checkpoints(root: str | Path) -> list[Path]:
    root = Path(root)
    found = [
        (int(m.group(1)), p) for p in root.glob("step_*") if (m := _STEP_DIR.match(p.name)) and p.is_dir()
    ]
    return [p for _, p in sorted(found)]


def find_checkpoint(run_dir: str | Path, resume: str) -> Path:
    """``resume`` is ``latest`` (the newest complete checkpoint of this run; a damaged newer one is skipped with a
    warning) or a checkpoint directory (used only when complete)."""
    if resume == "latest":
        found = list_checkpoints(Path(run_dir) / "checkpoints")
        if not found:
            raise CheckpointError(
                f"--resume_from_checkpoint latest: no checkpoint in {Path(run_dir) / 'checkpoints'}"
            )
        damaged = []
        for path in reversed(found):
            problem = verify_checkpoint(path)
            if problem is None:
                if damaged:
                    logger.warning(
                        "--resume_from_checkpoint latest: %s; falling back to %s",
                        "; ".join(damaged),
                        path.name,
                    )
                return path
            damaged.append(f"{path.name} is damaged ({problem})")
        raise CheckpointError(
            f"--resume_from_checkpoint latest: no complete checkpoint in {found[0].parent}: "
            + "; ".join(damaged)
        )
    path = Path(resume)
    if not (path / "trainer_state.json").exists():
        raise CheckpointError(
            f"--resume_from_checkpoint {resume}: not a checkpoint directory (no trainer_state.json)"
        )
    problem = verify_checkpoint(path)
    if problem is not None:
        raise CheckpointError(
            f"--resume_from_checkpoint {resume}: the checkpoint is damaged ({problem}); pick an earlier one from "
            f"{path.parent} or use --resume_from_checkpoint latest, which skips damaged checkpoints"
        )
    return path


def load_checkpoint(
    path: str | Path, accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this process's RNG; returns the trainer state."""
    path = Path(path)
    if is_sharded(accelerator.unwrap_model(model)):
        try:
            sharded_checkpoint.load_state(path, accelerator.unwrap_model(model), optimizer)
        except pickle.UnpicklingError as err:
            raise CheckpointError(
                f"refusing to load {path / sharded_checkpoint.SHARDED_DIR}: {err}"
            ) from None
        except (FileNotFoundError, RuntimeError, ValueError) as err:
            raise CheckpointError(
                f"{path / sharded_checkpoint.SHARDED_DIR} cannot be read into this run "
                f"({str(err).splitlines()[0][:300]}); a sharded checkpoint resumes on the number of processes "
                "that wrote it, with fsdp: full_shard"
            ) from None
    else:
        load_weights(accelerator.unwrap_model(model), path / "model")
        optimizer.load_state_dict(safe_load(path / "optimizer.pt"))
    scheduler.load_state_dict(safe_load(path / "scheduler.pt"))
    rng_file = path / f"rng_state_{accelerator.process_index}.pt"
    if rng_file.exists():
        set_rng_state(safe_load(rng_file))
    else:
        logger.warning("%s missing: RNG not restored (different number of processes?)", rng_file.name)
    state = json.loads((path / "trainer_state.json").read_text())
    logger.info("resumed from %s (step %d)", path, state["step"])
    return state


def load_weights(model: torch.nn.Module, directory: Path) -> None:
    """Load a checkpoint's ``model/`` into the existing (possibly LoRA-wrapped) model, in place
    (:func:`invert4tvg.policy.model_dir.load_weights`); a damaged or incomplete one is a :class:`CheckpointError`."""
    from safetensors import SafetensorError

    try:
        model_dir.load_weights(model, directory)
    except SafetensorError as err:
        raise CheckpointError(
            f"{directory}: a weights file cannot be read ({err}); the checkpoint is damaged: resume from an "
            f"earlier one in {directory.parent.parent}"
        ) from err
    except FileNotFoundError as err:  # the head module's weights are missing
        raise CheckpointError(str(err)) from None
