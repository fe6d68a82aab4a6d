"""Rollouts with vLLM (``backend: vllm``, or inside Ray workers with ``ray-vllm``). GPU only.

What keeps vLLM's rollouts identical in meaning to the trainer's forward passes:

- **Video timing.** Each request carries ``(frames, video_metadata)`` exactly as ``policy/processing.py`` gives
  them to the transformers processor, with the same overrides (``video_processor_kwargs``), so vLLM's HF
  processor call derives the same ``second_per_grid_ts`` (temporal mRoPE) as the trainer. vLLM only forwards the
  metadata of Qwen2.5-VL videos since vllm-project/vllm#47736 (merged 2026-07; before it, pre-decoded videos got
  a default fps silently); :func:`vllm_video_inputs` is checked against the trainer's processor path on CPU in
  ``tests/test_rollout_vllm_inputs.py``.
- **Caches.** The multimodal processor cache is off (``mm_processor_cache_gb=0``) and every item gets an id that
  includes its timing, so a cached result can never carry another fps; prefix, multimodal and encoder caches are
  reset after each weight load (their contents were computed by the previous weights) and the encoder cache after
  every batch (it otherwise grows with the number of distinct clips).
- **Log-probabilities** are vLLM's ``processed_logprobs``: after temperature and the vision-token ban, which is
  the distribution ``Policy.completion_logprobs`` scores (with ``top_p < 1`` or ``top_k > 0`` vLLM's values are
  renormalised over the kept tokens, the HF engine's are not).
- **Weights** are loaded in place through the model's ``load_weights`` on every worker (``vllm_worker.py``). LoRA
  runs send adapters only; this engine merges them into the base weights it read from the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invert4tvg.config import ModelArguments
from invert4tvg.data.frames import DecodedVideo
from invert4tvg.rollout.base import (
    Completion,
    RolloutEngine,
    RolloutRequest,
    SamplingParams,
    StaleWeightsError,
)
from invert4tvg.rollout.weights import (
    checkpoint_name,
    is_lora_payload,
    lora_base_names,
    merge_lora,
    read_checkpoint_tensors,
)

logger = logging.getLogger(__name__)

_BANNED_LOGIT = -1.0e4  # vision tokens: exp(-1e4) underflows to 0, as the trainer's -inf mask does
_LOAD_CHUNK_BYTES = 1 << 30


def vllm_video_inputs(video: DecodedVideo) -> tuple[tuple[np.ndarray, dict[str, Any]], str]:
    """The ``(frames, metadata)`` item vLLM receives for a video, and a cache id covering frames and timing."""
    metadata = video.video_metadata()
    key = json.dumps([video.path, video.clip, video.frames.shape, metadata], sort_keys=True)
    return (video.frames, metadata), hashlib.sha256(key.encode()).hexdigest()


def _base_checkpoint(args: ModelArguments) -> tuple[str, float]:
    """The checkpoint vLLM loads and the LoRA scaling: an adapter directory resolves to its base model."""
    path = args.model_name_or_path
    adapter = Path(path) / "adapter_config.json"
    if adapter.exists():
        config = json.loads(adapter.read_text())
        return config["base_model_name_or_path"], config["lora_alpha"] / config["r"]
    return path, args.lora_alpha / args.lora_r


class VLLMEngine(RolloutEngine):
    """A ``vllm.LLM`` holding its own copy of the policy. ``colocate=True`` sleeps between calls so a trainer on
    the same GPU gets the memory back (weights kept in CPU memory, KV cache dropped)."""

    shares_model = False

    def __init__(
        self,
        model: ModelArguments,
        *,
        max_batch_sequences: int = 256,
        gpu_memory_utilization: float = 0.5,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        dtype: str | None = None,
        seed: int = 0,
        colocate: bool = False,
        enforce_eager: bool = False,
        **llm_kwargs: Any,
    ) -> None:
        try:
            import vllm
        except ImportError as err:
            raise ImportError(
                "backend vllm needs vLLM on a CUDA machine: pip install 'invert4tvg[vllm]' (vllm==0.32.0); "
                f"import failed: {err}"
            ) from err
        from transformers import AutoProcessor

        from invert4tvg.policy.processing import video_processor_kwargs, vision_token_ids

        self._vllm = vllm
        self.model_args = model
        self.checkpoint, self.lora_scaling = _base_checkpoint(model)
        self.colocate = colocate
        self.policy_version = 0
        self._lora_base: dict[str, torch.Tensor] | None = None
        processor = AutoProcessor.from_pretrained(model.model_name_or_path)
        self.tokenizer = processor.tokenizer
        self.video_kwargs = video_processor_kwargs(processor)
        self.banned = vision_token_ids(self.tokenizer)
        self.llm = vllm.LLM(
            model=self.checkpoint,
            tokenizer=model.model_name_or_path,
            dtype=dtype or model.dtype,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            max_num_seqs=max_batch_sequences,
            tensor_parallel_size=tensor_parallel_size,
            enforce_eager=enforce_eager,
            enable_sleep_mode=colocate,
            limit_mm_per_prompt={"image": 0, "video": 1},
            mm_processor_cache_gb=0,
            logprobs_mode="processed_logprobs",
            worker_extension_cls="invert4tvg.rollout.vllm_worker.WeightLoaderExtension",
            **llm_kwargs,
        )
        generation = self.llm.llm_engine.model_config.hf_config
        eos = getattr(getattr(generation, "text_config", generation), "eos_token_id", None)
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = sorted(i for i in eos_ids if i is not None)
        self._asleep = False
        if colocate:
            self._sleep()

    # -- contract -------------------------------------------------------------------------------------------
    def generate(
        self, requests: Sequence[RolloutRequest], sampling: SamplingParams
    ) -> list[list[Completion]]:
        if not requests:
            return []
        self._wake()
        prompts, params = [], []
        for index, request in enumerate(requests):
            prompt: dict[str, Any] = {"prompt": request.prompt}
            if request.video is not None:
                item, uuid = vllm_video_inputs(request.video)
                prompt["multi_modal_data"] = {"video": [item]}
                prompt["multi_modal_uuids"] = {"video": [uuid]}
                prompt["mm_processor_kwargs"] = dict(self.video_kwargs)
            prompts.append(prompt)
            seed = None if sampling.seed is None else sampling.seed + index
            params.append(self._sampling_params(request.num_samples, sampling, seed))
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = [
            [self._completion(sample, request.request_id) for sample in output.outputs]
            for request, output in zip(requests, outputs)
        ]
        self._reset_caches(("reset_encoder_cache",))
        if self.colocate:
            self._sleep()
        return results

    def update_weights(self, weights: Mapping[str, torch.Tensor] | None, version: int) -> None:
        if version < self.policy_version:
            raise StaleWeightsError(
                f"asked to serve policy version {version}, already at {self.policy_version}"
            )
        if weights is None:
            if version != self.policy_version:
                raise ValueError("the vLLM engine holds its own weights: pass Policy.weights_for_sync()")
            return
        full = self._checkpoint_weights(weights)
        self._wake()
        for chunk in _chunks(full):
            self.llm.collective_rpc("invert4tvg_load_weights", args=(chunk,))
        self._reset_caches(("reset_prefix_cache", "reset_mm_cache", "reset_encoder_cache"))
        self.policy_version = version
        if self.colocate:
            self._sleep()

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            del self.llm
            torch.cuda.empty_cache()

    # -- internals ------------------------------------------------------------------------------------------
    def _sampling_params(self, n: int, sampling: SamplingParams, seed: int | None) -> Any:
        greedy = sampling.temperature == 0
        return self._vllm.SamplingParams(
            n=n,
            temperature=sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            top_k=0 if greedy else sampling.top_k,
            repetition_penalty=1.0,
            max_tokens=sampling.max_tokens,
            seed=seed,
            logprobs=0,  # the sampled token's log-probability only
            stop_token_ids=self.eos_ids,
            skip_special_tokens=True,
            logit_bias=dict.fromkeys(self.banned, _BANNED_LOGIT),
        )

    def _completion(self, sample: Any, request_id: str) -> Completion:
        ids = list(sample.token_ids)
        logprobs = [float(step[token].logprob) for step, token in zip(sample.logprobs or [], ids)]
        if len(logprobs) != len(ids):
            raise RuntimeError(f"vLLM returned {len(logprobs)} log-probabilities for {len(ids)} tokens")
        finish = "stop" if sample.finish_reason == "stop" else "length"
        return Completion(
            token_ids=ids,
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            logprobs=logprobs,
            finish_reason=finish,
            policy_version=self.policy_version,
            request_id=request_id,
        )

    def _checkpoint_weights(self, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not is_lora_payload(weights):
            return {checkpoint_name(name): t for name, t in weights.items()}
        if self._lora_base is None:
            self._lora_base = read_checkpoint_tensors(self.checkpoint, lora_base_names(weights))
        return merge_lora(self._lora_base, weights, self.lora_scaling)

    def _reset_caches(self, names: Sequence[str]) -> None:
        for name in names:
            reset = getattr(self.llm, name, None)
            if callable(reset):
                reset()
            elif name != "reset_encoder_cache":
                logger.warning("this vLLM has no LLM.%s; cached state may outlive a weight update", name)

    def _sleep(self) -> None:
        if not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = True

    def _wake(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False


def _chunks(weights: Mapping[str, torch.Tensor]) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Weights in groups of about 1 GiB, so one RPC never serialises the whole model at once."""
    chunk: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in weights.items():
        chunk.append((name, tensor))
        size += tensor.numel() * tensor.element_size()
        if size >= _LOAD_CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk
