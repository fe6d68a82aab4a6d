"""What a training run checks about its launch before it creates the ``Accelerator`` or loads a model: the
distributed backend, and (``invert4tvg.training.memory_plan``) whether the model fits the GPUs.

Refused backends, each with one line naming what to use instead:

- **DeepSpeed** (``accelerate launch --config_file`` with ``distributed_type: DEEPSPEED``): with ZeRO >= 2
  accelerate steps the optimizer inside every ``backward``, so ``no_sync`` does not hold and a GRPO step with several
  micro-batches would silently make several updates; with ZeRO-3 ``from_pretrained`` partitions the model and the
  reference copy copies partitions. Sharding goes through FSDP2 instead (``fsdp: full_shard``).
- **accelerate's FSDP plugin** (``distributed_type: FSDP``): the trainer shards the model itself (it needs the FSDP
  modules for generation and checkpoints, :mod:`invert4tvg.training.fsdp`); accelerate's own wrapping would shard it a
  second way.
"""

from __future__ import annotations

import os

from invert4tvg.config_checks import ConfigError

FSDP2_LAUNCH = "accelerate launch --config_file recipes/accelerate/fsdp2_8gpu.yaml"


class LaunchError(ConfigError):
    """The run was launched in a way the trainer cannot train correctly; nothing was loaded."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def check_backend(accelerator=None) -> None:
    """Refuse DeepSpeed and accelerate's FSDP plugin, from the launcher's environment (before an ``Accelerator``
    exists, so accelerate's own errors about a missing ``deepspeed`` package never come first) or from
    ``accelerator``'s distributed type."""
    kind = None
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        kind = "DEEPSPEED"
    elif _flag("ACCELERATE_USE_FSDP"):
        kind = "FSDP"
    elif accelerator is not None:
        kind = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type)).upper()
    if kind == "DEEPSPEED":
        raise LaunchError(
            "DeepSpeed is not supported: with ZeRO >= 2 accelerate steps the optimizer at every micro-batch's backward "
            "(several updates per GRPO step, silently) and ZeRO-3 partitions the model before the reference is "
            f"copied. Shard with FSDP2 instead: {FSDP2_LAUNCH} ... with fsdp: full_shard (docs/training.md)."
        )
    if kind == "FSDP":
        raise LaunchError(
            "accelerate's FSDP plugin is not used: the trainer shards the model itself with FSDP2. Launch with "
            f"{FSDP2_LAUNCH} (a plain multi-GPU config) and set fsdp: full_shard in the training config."
        )


def world_size() -> int:
    """The number of processes the launcher started (``WORLD_SIZE``), known before the ``Accelerator`` exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_launch(model_args, data_args, args) -> None:
    """Everything a recipe checks before it creates the ``Accelerator`` and loads a model: the backend, then the
    memory plan against the GPU (:func:`invert4tvg.training.memory_plan.check_fits`)."""
    from invert4tvg.training.memory_plan import check_fits

    check_backend()
    check_fits(model_args, data_args, args, world_size())
