"""Where a vLLM engine runs: one engine per trainer rank on that rank's device, and enough memory for it.

With ``rollout_backend: vllm`` under ``accelerate launch`` every rank builds its own engine (``colocate``). Left to
itself, each rank's ``vllm.LLM`` would take ``cuda:0``. As TRL's colocate mode does, each rank's engine runs vLLM's
``external_launcher`` executor: one worker in the trainer's process (multiprocessing off), on the device of the
rank's ``LOCAL_RANK``, joining the ranks' existing process group through ``RANK`` / ``WORLD_SIZE`` /
``MASTER_ADDR`` / ``MASTER_PORT``. Ranks get different sampling seeds (``seed + rank``), or every rank would draw
the same random numbers.

``gpu_memory_utilization`` is the fraction of the whole GPU vLLM may hold, weights included; with sleep mode the
trainer has the rest while the engine sleeps. A fraction too small for the weights fails late and obscurely inside
vLLM, so it is checked at start against the checkpoint's size in the served dtype.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from invert4tvg.rollout.weights import checkpoint_numel

_KV_MARGIN = 1.1  # weights plus at least a tenth of them for activations and the KV cache


@dataclass(frozen=True)
class Placement:
    """What one rank passes to vLLM: ``LLM`` keyword arguments and environment variables."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    llm_kwargs: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def apply(self) -> None:
        """Set the environment (vLLM reads it while building the engine, and later) and the current GPU."""
        os.environ.update(self.env)
        if self.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(self.device))


def placement(
    per_rank: bool, tensor_parallel_size: int, seed: int, env: Mapping[str, str] | None = None
) -> Placement:
    """This rank's placement, from the launcher's environment (``torchrun`` / ``accelerate launch``).
    ``per_rank``: the engine lives in a trainer rank's process (not in a Ray worker of its own)."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1")) if per_rank else 1
    rank = int(env.get("RANK", "0")) if per_rank else 0
    local = int(env.get("LOCAL_RANK", "0")) if per_rank else 0
    device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if world == 1:
        return Placement(device=device, llm_kwargs={"seed": seed})
    if tensor_parallel_size != 1:
        raise ValueError(
            "vLLM engines in the trainer's ranks (rollout_backend vllm under accelerate launch) run one engine per "
            f"rank with vllm_tensor_parallel_size 1, got {tensor_parallel_size}; use rollout_backend ray-vllm for "
            "tensor parallelism"
        )
    return Placement(
        rank,
        local,
        world,
        device,
        {"distributed_executor_backend": "external_launcher", "seed": seed + rank},
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(local),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": env.get("MASTER_ADDR", "127.0.0.1"),
            "MASTER_PORT": env.get("MASTER_PORT", "29500"),
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # the external launcher's engine lives in this process
        },
    )


def check_memory_fraction(checkpoint: str, dtype: str, fraction: float, device: str) -> None:
    """Refuse, with the numbers, a ``gpu_memory_utilization`` whose share of the GPU cannot hold the weights."""
    if not device.startswith("cuda"):
        return  # vLLM on CPU sizes its KV cache from VLLM_CPU_KVCACHE_SPACE, not from a fraction
    served = torch.bfloat16 if dtype in ("auto", "bfloat16") else getattr(torch, dtype)
    total = torch.cuda.get_device_properties(torch.device(device)).total_memory
    refuse_memory_fraction(
        checkpoint, checkpoint_numel(checkpoint) * served.itemsize, served, fraction, device, total
    )


def refuse_memory_fraction(
    checkpoint: str, weights_bytes: int, dtype: torch.dtype, fraction: float, device: str, device_bytes: int
) -> None:
    needed = weights_bytes * _KV_MARGIN / device_bytes
    if fraction < needed:
        raise ValueError(
            f"vllm_gpu_memory_utilization {fraction} x {device_bytes / 1e9:.1f} GB ({device}) = "
            f"{fraction * device_bytes / 1e9:.1f} GB cannot hold the {weights_bytes / 1e9:.1f} GB of "
            f"{str(dtype).removeprefix('torch.')} weights of {checkpoint} plus a KV cache: set "
            f"vllm_gpu_memory_utilization to at least {needed:.2f} (the trainer keeps the rest), or use "
            "rollout_backend ray-vllm on GPUs of its own"
        )
