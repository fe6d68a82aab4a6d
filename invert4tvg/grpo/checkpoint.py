"""Resumable checkpoints shared by the GRPO and SFT loops.

``RUN/checkpoints/step_N/`` holds the model in ``save_pretrained`` layout (safetensors; only the adapters with LoRA)
plus the processor, the optimizer and scheduler states, every process's RNG states, and ``trainer_state.json``
(step, data position, task sampler, counters). A checkpoint is written to a temporary directory and renamed, so a
crash mid-save never leaves a half checkpoint that ``--resume latest`` would pick.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step_(\d+)$")


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
) -> Path:
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step}"
    tmp = root / f".step_{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(tmp / "model", safe_serialization=True)
        processor.save_pretrained(tmp / "model")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **trainer_state}, indent=2) + "\n")
    torch.save(rng_state(), tmp / f"rng_state_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        _rotate(root, save_total_limit)
        logger.info("checkpoint saved: %s", final)
    accelerator.wait_for_everyone()
    return final


def _rotate(root: Path, limit: int | None) -> None:
    if not limit:
        return
    for old in list_checkpoints(root)[:-limit]:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(root: str | Path) -> list[Path]:
    root = Path(root)
    found = [
        (int(m.group(1)), p) for p in root.glob("step_*") if (m := _STEP_DIR.match(p.name)) and p.is_dir()
    ]
    return [p for _, p in sorted(found)]


def find_checkpoint(run_dir: str | Path, resume: str) -> Path:
    """``resume`` is ``latest`` (the newest complete checkpoint of this run) or a checkpoint directory."""
    if resume == "latest":
        found = list_checkpoints(Path(run_dir) / "checkpoints")
        if not found:
            raise FileNotFoundError(f"--resume latest: no checkpoint in {Path(run_dir) / 'checkpoints'}")
        return found[-1]
    path = Path(resume)
    if not (path / "trainer_state.json").exists():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint directory (no trainer_state.json)")
    return path


def load_checkpoint(
    path: str | Path, accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this process's RNG; returns the trainer state."""
    path = Path(path)
    load_weights(accelerator.unwrap_model(model), path / "model")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rng_file = path / f"rng_state_{accelerator.process_index}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=False))
    else:
        logger.warning("%s missing: RNG not restored (different number of processes?)", rng_file.name)
    state = json.loads((path / "trainer_state.json").read_text())
    logger.info("resumed from %s (step %d)", path, state["step"])
    return state


def load_weights(model: torch.nn.Module, model_dir: Path) -> None:
    """Load a ``save_pretrained`` directory into an existing (possibly LoRA-wrapped) model.

    Full weights go through ``from_pretrained``, which knows the on-disk key layout of each transformers version,
    and are then copied in place, so optimizer and accelerate references to the parameters stay valid.
    """
    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_file(model_dir / "adapter_model.safetensors"))
        return
    dtype = next(model.parameters()).dtype
    saved = type(model).from_pretrained(model_dir, dtype=dtype)
    model.load_state_dict(saved.state_dict(), strict=True)
