"""One rollout worker: a process (a Ray actor) hosting one engine, built from an :class:`EngineSpec`.

The spec is all a fresh process needs to build the same model as the trainer (same checkpoint, head, dtype
policy and LoRA configuration, hence the same parameter names), so a worker restarted after a crash is rebuilt
from it and then receives the current weights. Workers check the policy version they are asked to serve.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from invert4tvg.config import ModelArguments
from invert4tvg.data.frames import DecodedVideo
from invert4tvg.modeling.logprobs import TokenConstraint
from invert4tvg.modeling.readout import HiddenReadout
from invert4tvg.policy.loading import load_policy
from invert4tvg.rollout.base import (
    Completion,
    RolloutEngine,
    RolloutRequest,
    SamplingParams,
    StaleWeightsError,
)
from invert4tvg.rollout.hf import HFEngine
from invert4tvg.rollout.vllm_engine import VLLMEngine
from invert4tvg.rollout.weights import PackedWeights, unpack_weights

#: A request as it travels to a worker: (prompt, num_samples, request_id, index of its video argument or None,
#: the head's decoding constraint or None, the head's hidden-state readout or None).
WireRequest = tuple[str, int, str, int | None, TokenConstraint | None, HiddenReadout | None]


@dataclass
class EngineSpec:
    """How a worker process builds its engine. ``backend`` is the engine inside the worker (hf | vllm)."""

    model: ModelArguments
    backend: str = "hf"
    max_batch_sequences: int = 64
    device: str = "auto"  # auto: cuda when the worker can see a GPU, else cpu (hf engine only)
    num_threads: int | None = None  # torch CPU threads (Ray sets OMP_NUM_THREADS to the worker's CPUs)
    vllm_options: dict[str, Any] = field(default_factory=dict)  # VLLMEngine keyword arguments


def build_local_engine(spec: EngineSpec) -> RolloutEngine:
    """The engine a worker hosts, holding its own copy of the model (``shares_model=False``)."""
    if spec.backend == "hf":
        # Built the way the trainer builds its policy (LoRA adapters included) so parameter names match the
        # trainer's ``weights_for_sync()``; the adapters' random init is overwritten by the first sync.
        policy = load_policy(spec.model, for_training=True)
        model = policy.model.eval().requires_grad_(False)
        device = spec.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device)
        return HFEngine(model, policy.processor, spec.max_batch_sequences, shares_model=False)
    if spec.backend == "vllm":
        # per_rank=False: the engine is this worker's own, not one of the trainer's ranks
        return VLLMEngine(
            spec.model, max_batch_sequences=spec.max_batch_sequences, per_rank=False, **spec.vllm_options
        )
    raise ValueError(f"unknown worker engine {spec.backend!r}; use hf or vllm")


class RolloutWorker:
    """The Ray actor class (wrapped with ``ray.remote`` by the pool). Methods run one at a time."""

    def __init__(self, spec: EngineSpec, index: int) -> None:
        import transformers

        logging.basicConfig(level=logging.WARNING)
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        if spec.num_threads:
            torch.set_num_threads(spec.num_threads)
        self.index = index
        self.engine = build_local_engine(spec)

    def info(self) -> dict[str, Any]:
        import ray

        return {
            "index": self.index,
            "pid": os.getpid(),
            "node": ray.util.get_node_ip_address(),
            "threads": torch.get_num_threads(),
            "policy_version": self.engine.policy_version,
        }

    def update_weights(self, weights: PackedWeights, version: int) -> int:
        self.engine.update_weights(unpack_weights(weights), version)
        return self.engine.policy_version

    def generate(
        self,
        requests: list[WireRequest],
        sampling: SamplingParams,
        expected_version: int,
        *videos: DecodedVideo,
    ) -> list[list[Completion]]:
        """Complete a shard. ``videos`` arrive as top-level arguments so Ray fetches them from the object store
        before the call starts; a request names its video by position."""
        if self.engine.policy_version != expected_version:
            raise StaleWeightsError(
                f"rollout worker {self.index} serves policy version {self.engine.policy_version}, the trainer "
                f"expects {expected_version}: a weight sync did not reach it"
            )
        # Arrays read from the object store are read-only views of shared memory; the processor wraps them in
        # tensors, which must own writable memory.
        owned = [replace(v, frames=v.frames.copy()) if not v.frames.flags.writeable else v for v in videos]
        batch = [
            RolloutRequest(
                prompt,
                owned[slot] if slot is not None else None,
                num_samples,
                request_id,
                constraint,
                readout,
            )
            for prompt, num_samples, request_id, slot, constraint, readout in requests
        ]
        return self.engine.generate(batch, sampling)

    def close(self) -> None:
        self.engine.close()
