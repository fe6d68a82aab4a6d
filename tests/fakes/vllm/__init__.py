"""A fake ``vllm`` for the tests: vLLM 0.32.0's public surface as the engine uses it, on top of transformers.

Importable as ``vllm`` only where a test puts ``tests/fakes`` on ``sys.path`` (``tests/fakes/__init__.py`` has
the helpers); never where the real vLLM imports. It reproduces the behaviours of vLLM 0.32.0 that the rollout
engine depends on, read from the 0.32.0 wheel (``vllm/entrypoints/llm.py``, ``engine/arg_utils.py``,
``sampling_params.py``, ``v1/serial_utils.py``, ``v1/engine/llm_engine.py``, ``v1/executor/ray_executor.py``):

- ``LLM(**kwargs)`` accepts only ``EngineArgs`` fields (:data:`ENGINE_ARGS_FIELDS`, the 0.32.0 list) and raises
  ``TypeError`` for anything else, as ``EngineArgs(...)`` does;
- :class:`SamplingParams` validates as vLLM's does (ranges, integer stop ids, greedy with ``n > 1`` raises);
- ``LLM.collective_rpc`` round-trips its arguments and results through a msgpack encoding without type
  information, as vLLM's ``MsgpackEncoder``/``MsgpackDecoder`` do when ``VLLM_ENABLE_V1_MULTIPROCESSING`` is on
  (its default): a tensor arrives as ``[dtype, shape, buffer index]`` and objects msgpack cannot encode raise;
- the encoder cache keeps serving a video's old embeddings (keyed by its ``multi_modal_uuids``) until
  ``LLM.llm_engine.reset_encoder_cache()``; ``LLM`` itself has no ``reset_encoder_cache``;
- sleep mode: ``sleep`` needs ``enable_sleep_mode``; loading weights while they sleep, or generating while anything
  sleeps, raises;
- tensor parallel > 1 under a Ray placement group targets the bundles named by ``VLLM_RAY_BUNDLE_INDICES``, else
  the group's first GPU bundles, and reserves their GPUs (a hang in vLLM; a ``TimeoutError`` here).

Generation runs the transformers model loaded from ``model``: the processor gets the prompt, the ``(frames,
metadata)`` video item and ``mm_processor_kwargs`` as vLLM's HF processor call does; log-probabilities are the
processed ones (after logit bias, temperature, top-k/top-p renormalisation).
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch

__version__ = "0.32.0+fake"

# ``EngineArgs`` fields of vLLM 0.32.0 (vllm/engine/arg_utils.py, read with ``ast`` from the wheel).
ENGINE_ARGS_FIELDS = frozenset(
    """model enable_return_routed_experts return_sampling_mask model_weights served_model_name tokenizer
    hf_config_path runner convert skip_tokenizer_init enable_prompt_embeds tokenizer_mode trust_remote_code
    allowed_local_media_path allowed_media_domains download_dir safetensors_load_strategy
    safetensors_prefetch_num_threads safetensors_prefetch_block_size load_format config_format dtype kv_cache_dtype
    seed max_model_len cudagraph_capture_sizes max_cudagraph_capture_size ir_op_priority
    distributed_executor_backend pipeline_parallel_size master_addr master_port nnodes node_rank
    distributed_timeout_seconds cpu_distributed_timeout_seconds numa_bind numa_bind_nodes numa_bind_cpus device_ids
    tensor_parallel_size prefill_context_parallel_size decode_context_parallel_size dcp_comm_backend
    dcp_q_replicate dcp_kv_cache_interleave_size cp_kv_cache_interleave_size data_parallel_size data_parallel_rank
    data_parallel_start_rank data_parallel_size_local data_parallel_address data_parallel_rpc_port
    data_parallel_hybrid_lb data_parallel_external_lb data_parallel_multi_port_external_lb data_parallel_backend
    enable_hc_sp enable_expert_parallel enable_batch_sharded_sampling enable_ep_weight_filter moe_backend
    linear_backend sparse_indexer_topk_backend all2all_backend enable_elastic_ep elastic_ep_max_dp_size enable_dbo
    ubatch_size dbo_decode_token_threshold dp_sync_interval dbo_prefill_token_threshold
    disable_nccl_for_dp_synchronization eplb_config enable_eplb expert_placement_strategy _api_process_count
    _api_process_rank max_parallel_loading_workers block_size enable_prefix_caching prefix_caching_hash_algo
    prefix_cache_retention_interval disable_sliding_window disable_cascade_attn offload_backend cpu_offload_gb
    cpu_offload_params offload_group_size offload_num_in_group offload_prefetch_step offload_params
    gpu_memory_utilization kv_cache_memory_bytes max_num_batched_tokens max_num_scheduled_tokens
    long_prefill_token_threshold long_prefill_token_threshold_adaptive max_num_seqs max_num_active_seqs
    max_num_queued_reqs max_num_queued_tokens max_logprobs logprobs_mode use_fp64_gumbel enable_trace_replay
    disable_log_stats aggregate_engine_logging revision code_revision hf_token hf_overrides model_class_overrides
    tokenizer_revision quantization quantization_config allow_deprecated_quantization enforce_eager
    disable_custom_all_reduce enable_shm_tensor_arena language_model_only limit_mm_per_prompt enable_mm_embeds
    interleave_mm_strings media_io_kwargs mm_processor_kwargs mm_processor_cache_gb mm_processor_cache_type
    mm_hasher_algorithm mm_shm_cache_max_object_size_mb mm_encoder_only mm_encoder_tp_mode mm_encoder_attn_backend
    mm_encoder_attn_dtype mm_encoder_fp8_scale_path mm_encoder_fp8_scale_save_path mm_encoder_fp8_scale_save_margin
    io_processor_plugin renderer_num_workers skip_mm_profiling video_pruning_rate video_pruning_method mm_tensor_ipc
    mm_processor_device mm_ipc_gpu_memory_gb mm_device_do_normalize enable_lora max_loras max_lora_rank
    default_mm_loras fully_sharded_loras max_cpu_loras lora_dtype lora_target_modules enable_tower_connector_lora
    specialize_active_lora enable_mixed_moe_lora_format enable_moe_shared_loras max_lora_cls_labels
    ray_workers_use_nsight num_gpu_blocks_override model_loader_extra_config ignore_patterns enable_chunked_prefill
    disable_chunked_mm_input scheduler_reserve_full_isl prefill_schedule_interval watermark
    disable_hybrid_kv_cache_manager structured_outputs_config aux_output_config reasoning_parser
    reasoning_parser_plugin speculative_config spec_method spec_model spec_tokens watermark_config diffusion_config
    show_hidden_metrics_for_version otlp_traces_endpoint collect_detailed_traces per_request_spec_decode_metrics
    kv_cache_metrics kv_cache_metrics_sample custom_histogram_buckets cudagraph_metrics
    enable_layerwise_nvtx_tracing enable_mfu_metrics enable_logging_iteration_details jit_monitor_mode
    jit_monitor_verbose enable_mm_processor_stats scheduling_policy scheduler_cls pooler_config compilation_config
    attention_config engram_config mamba_config kernel_config enable_flashinfer_autotune worker_cls
    worker_extension_cls profiler_config logging_config log_level log_config_file kv_transfer_config
    kv_events_config ec_transfer_config ec_manager_config reasoning_config generation_config enable_sleep_mode
    sleep_mode_offload_cudagraph sleep_preserve_parameter_names enable_cumem_allocator enable_nccl_comm_suspend
    override_generation_config model_impl attention_backend kv_cache_dtype_skip_layers mamba_cache_dtype
    mamba_ssm_cache_dtype mamba_block_size prefix_match_unit mamba_cache_mode enable_mamba_shared_prefix_checkpoint
    replayssm_buffer_len use_replayssm mamba_backend mamba_ssu_algorithm enable_mamba_cache_stochastic_rounding
    mamba_cache_philox_rounds additional_config use_tqdm_on_load pt_load_map_location logits_processors
    async_scheduling stream_interval kv_sharing_fast_prefill swa_bounded_replay optimization_level performance_mode
    fault_tolerance_config enable_fault_tolerance kv_offloading_size kv_offloading_backend tokens_only
    shutdown_timeout weight_transfer_config fail_on_environ_validation gdn_prefill_backend kda_prefill_backend
    kda_decode_backend""".split()  # noqa: SIM905 (a list of 256 names reads better as text)
)
_SAMPLING_EPS = 1e-5  # vLLM: temperatures below this are greedy
_MAX_TEMP = 1e-2  # vLLM raises smaller positive temperatures to this (with a warning)


class VLLMValidationError(ValueError):
    pass


# -- SamplingParams ---------------------------------------------------------------------------------------------
@dataclass
class SamplingParams:
    """The fields the engine can send, validated as ``vllm.SamplingParams.__post_init__`` does in 0.32.0."""

    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    logit_bias: dict[int, float] | None = None
    allowed_token_ids: list[int] | None = None
    bad_words: list[str] | None = None
    extra_args: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if 0 < self.temperature < _MAX_TEMP:
            self.temperature = _MAX_TEMP
        if self.seed == -1:
            self.seed = None
        self.stop = (
            [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)
        )
        self.stop_token_ids = list(dict.fromkeys(self.stop_token_ids or []))
        if self.logprobs is True:
            self.logprobs = 1
        self._verify_args()
        if self.temperature < _SAMPLING_EPS:
            self.top_p, self.top_k, self.min_p = 1.0, 0, 0.0
            if self.n > 1:
                raise VLLMValidationError(f"n must be 1 when using greedy sampling, got {self.n}.")

    def _verify_args(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise VLLMValidationError(f"n must be at least 1, got {self.n}.")
        if not -2.0 <= self.presence_penalty <= 2.0 or not -2.0 <= self.frequency_penalty <= 2.0:
            raise VLLMValidationError("presence_penalty and frequency_penalty must be in [-2, 2].")
        if not math.isfinite(self.repetition_penalty) or self.repetition_penalty <= 0.0:
            raise VLLMValidationError(
                f"repetition_penalty must be greater than zero, got {self.repetition_penalty}."
            )
        if not math.isfinite(self.temperature) or not 0.0 <= self.temperature <= 2.0:
            raise VLLMValidationError(f"temperature must be in [0, 2], got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise VLLMValidationError(f"top_p must be in (0, 1], got {self.top_p}.")
        if not isinstance(self.top_k, int) or self.top_k < -1:
            raise VLLMValidationError(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.")
        if not 0.0 <= self.min_p <= 1.0:
            raise VLLMValidationError(f"min_p must be in [0, 1], got {self.min_p}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise VLLMValidationError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.min_tokens < 0 or (self.max_tokens is not None and self.min_tokens > self.max_tokens):
            raise VLLMValidationError(f"min_tokens must be in [0, max_tokens], got {self.min_tokens}.")
        if self.logprobs is not None and self.logprobs != -1 and self.logprobs < 0:
            raise VLLMValidationError(f"logprobs must be non-negative or -1, got {self.logprobs}.")
        if not all(isinstance(i, int) for i in self.stop_token_ids):
            raise VLLMValidationError(
                f"stop_token_ids must contain only integers, got {self.stop_token_ids}."
            )
        if any(not s for s in self.stop):
            raise VLLMValidationError("stop cannot contain an empty string.")


# -- outputs ----------------------------------------------------------------------------------------------------
@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    outputs: list[CompletionOutput]
    finished: bool = True


# -- msgpack round trip (vllm/v1/serial_utils.py) ----------------------------------------------------------------
_RAW_VIEW = 3  # CUSTOM_TYPE_RAW_VIEW
_INLINE_BYTES = 256  # VLLM_MSGPACK_ZERO_COPY_THRESHOLD


def msgpack_round_trip(obj: Any) -> Any:
    """``obj`` after vLLM's ``MsgpackEncoder().encode`` and an untyped ``MsgpackDecoder().decode``: tuples become
    lists, tensors and arrays become ``[dtype, shape, data]`` where ``data`` is an index into buffers the decoder
    no longer holds (or, under 256 bytes, a raw memoryview); other objects raise ``TypeError``."""
    import msgpack
    import numpy as np

    aux: list[bytes] = [b""]

    def encode(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            raw = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            dtype = str(value.dtype).removeprefix("torch.")
            return [dtype, list(value.shape), _place(raw)]
        if isinstance(value, np.ndarray) and value.dtype.kind not in ("O", "V"):
            return [value.dtype.str, list(value.shape), _place(value.tobytes())]
        if isinstance(value, slice):
            return [value.start, value.stop, value.step]
        raise TypeError(
            f"Object of type {type(value)} is not serializableSet VLLM_ALLOW_INSECURE_SERIALIZATION=1 to allow "
            "fallback to pickle-based serialization."
        )

    def _place(raw: bytes) -> Any:
        if len(raw) < _INLINE_BYTES:
            return msgpack.ExtType(_RAW_VIEW, raw)
        aux.append(raw)
        return len(aux) - 1

    def ext_hook(code: int, data: bytes) -> Any:
        if code == _RAW_VIEW:
            return memoryview(data)
        raise NotImplementedError(f"Extension type code {code} is not supported")

    packed = msgpack.packb(obj, default=encode, use_bin_type=True)
    return msgpack.unpackb(packed, raw=False, ext_hook=ext_hook, strict_map_key=False)


def _multiprocessing(backend: str | None) -> bool:
    if backend == "external_launcher":  # vLLM turns V1 multiprocessing off for it
        return False
    return os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") != "0"


# -- the served model --------------------------------------------------------------------------------------------
_LEGACY = (("model.", "model.language_model."), ("visual.", "model.visual."))


class _ServedModel(torch.nn.Module):
    """The model inside a worker: ``load_weights`` takes checkpoint names, as vLLM's Qwen2.5-VL does."""

    def __init__(self, hf_model: torch.nn.Module, llm: LLM) -> None:
        super().__init__()
        self.hf = hf_model
        self._llm = llm

    def load_weights(self, weights) -> set[str]:
        self._llm._check_awake("weights", "load weights")
        params = dict(self.hf.named_parameters())
        params.update(dict(self.hf.named_buffers()))
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights:
                if not isinstance(tensor, torch.Tensor):
                    raise AttributeError(f"'{type(tensor).__name__}' object has no attribute 'to'")
                target = params.get(name)
                if target is None:
                    for old, new in _LEGACY:
                        if name.startswith(old) and new + name[len(old) :] in params:
                            target = params[new + name[len(old) :]]
                if target is None:
                    raise ValueError(
                        f"There is no module or parameter named '{name}' in Qwen2_5_VLForConditionalGeneration"
                    )
                if target.shape != tensor.shape:
                    raise ValueError(f"{name}: shape {tuple(tensor.shape)} != {tuple(target.shape)}")
                target.copy_(tensor.to(target.dtype))
                loaded.add(name)
        return loaded


class _ModelRunner:
    def __init__(self, model: _ServedModel) -> None:
        self.model = model


class _WorkerBase:
    """What ``worker_extension_cls`` is mixed into (vllm/v1/worker/gpu_worker.py's ``Worker``)."""

    def __init__(self, model: _ServedModel, rank: int) -> None:
        self.model_runner = _ModelRunner(model)
        self.rank = rank


# -- the engine --------------------------------------------------------------------------------------------------
@dataclass
class _ModelConfig:
    hf_config: Any
    max_model_len: int | None


@dataclass
class _EngineCore:
    """``LLM.llm_engine``: holds the encoder cache (the scheduler's and the model runner's, reset together)."""

    model_config: _ModelConfig
    encoder_cache: dict[str, Any] = field(default_factory=dict)
    encoder_cache_resets: int = 0

    def reset_encoder_cache(self) -> None:
        self.encoder_cache.clear()
        self.encoder_cache_resets += 1

    def reset_mm_cache(self) -> None:
        pass

    def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        return True


class LLM:
    def __init__(self, model: str, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - ENGINE_ARGS_FIELDS)
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument '{unknown[0]}'")
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.kwargs = dict(kwargs, model=model)
        dtype = kwargs.get("dtype", "auto")
        self.processor = AutoProcessor.from_pretrained(kwargs.get("tokenizer") or model)
        hf_model = AutoModelForImageTextToText.from_pretrained(
            model, dtype=dtype if dtype != "auto" else None
        )
        hf_model.eval().requires_grad_(False)
        self.hf_model = hf_model
        self.llm_engine = _EngineCore(_ModelConfig(hf_model.config, kwargs.get("max_model_len")))
        self.sleep_enabled = bool(kwargs.get("enable_sleep_mode", False))
        self.asleep: set[str] = set()  # tags whose memory is released
        self.backend = kwargs.get("distributed_executor_backend")
        self.tensor_parallel_size = int(kwargs.get("tensor_parallel_size", 1))
        self.gpu_bundles = _claim_ray_bundles(self.tensor_parallel_size, self.backend)
        self._rng = torch.Generator().manual_seed(int(kwargs.get("seed", 0)))
        served = _ServedModel(hf_model, self)
        extension = kwargs.get("worker_extension_cls")
        worker_cls: type = _WorkerBase
        if extension:
            module, _, name = extension.rpartition(".")
            worker_cls = type("Worker", (_WorkerBase, getattr(importlib.import_module(module), name)), {})
        self.workers = [worker_cls(served, rank) for rank in range(self.tensor_parallel_size)]
        self.rpc_calls: list[tuple[str, Any]] = []  # (method, args as a worker received them)

    # -- control ------------------------------------------------------------------------------------------
    def collective_rpc(
        self, method: str, timeout: float | None = None, args: tuple = (), kwargs=None
    ) -> list:
        kwargs = kwargs or {}
        if _multiprocessing(self.backend):
            args, kwargs = msgpack_round_trip([list(args), kwargs])
        self.rpc_calls.append((method, args))
        results = [getattr(worker, method)(*args, **kwargs) for worker in self.workers]
        return msgpack_round_trip(results) if _multiprocessing(self.backend) else results

    def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        return self.llm_engine.reset_prefix_cache(reset_running_requests, reset_connector)

    def reset_mm_cache(self) -> None:
        self.llm_engine.reset_mm_cache()

    def sleep(self, level: int = 1, mode: str = "abort") -> None:
        if not self.sleep_enabled:
            raise ValueError("Sleep mode is not enabled. Please compile vLLM with enable_sleep_mode=True.")
        if level >= 1:
            self.asleep = {"weights", "kv_cache"}

    def wake_up(self, tags: list[str] | None = None) -> bool:
        for tag in tags or ["weights", "kv_cache", "scheduling"]:
            if tag not in ("weights", "kv_cache", "scheduling"):
                raise ValueError(f"unknown wake_up tag {tag!r}")
            self.asleep.discard(tag)
        return not self.asleep

    def _check_awake(self, tag: str, action: str) -> None:
        if tag in self.asleep:
            raise RuntimeError(
                f"cannot {action}: the engine's {tag} memory is asleep (wake_up(tags=['{tag}']))"
            )

    # -- generation ---------------------------------------------------------------------------------------
    def generate(self, prompts, sampling_params=None, use_tqdm: bool = True, **_: Any) -> list[RequestOutput]:
        if isinstance(prompts, dict | str):
            prompts = [prompts]
        params = (
            sampling_params
            if isinstance(sampling_params, list)
            else [sampling_params or SamplingParams()] * len(prompts)
        )
        if len(params) != len(prompts):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        for tag in ("weights", "kv_cache"):
            self._check_awake(tag, "generate")
        return [self._generate_one(str(i), p, sp) for i, (p, sp) in enumerate(zip(prompts, params))]

    @torch.no_grad()
    def _generate_one(self, request_id: str, prompt: dict, params: SamplingParams) -> RequestOutput:
        vocab = self.hf_model.get_output_embeddings().weight.shape[0]
        bad = [t for t in (params.logit_bias or {}) if not isinstance(t, int) or not 0 <= t < vocab]
        if bad:
            raise ValueError(
                f"token_id(s) {bad} in logit_bias contain out-of-vocab token ids. Vocabulary size: {vocab}"
            )
        inputs, uuid = self._inputs(prompt)
        # vLLM stops at the tokenizer's EOS and, from generation_config.json, its eos_token_id(s)
        # (SamplingParams.update_from_generation_config), besides stop_token_ids.
        eos = set()
        if not params.ignore_eos:
            configured = getattr(self.hf_model.generation_config, "eos_token_id", None)
            configured = configured if isinstance(configured, list) else [configured]
            eos = {i for i in [self.processor.tokenizer.eos_token_id, *configured] if i is not None}
        stop = set(params.stop_token_ids) | eos
        seed = (
            params.seed if params.seed is not None else int(torch.randint(2**31, (1,), generator=self._rng))
        )
        generator = torch.Generator().manual_seed(seed)
        outputs = [self._sample(index, inputs, uuid, params, stop, generator) for index in range(params.n)]
        return RequestOutput(request_id, prompt.get("prompt"), outputs)

    def _inputs(self, prompt: dict) -> tuple[dict, str | None]:
        videos = (prompt.get("multi_modal_data") or {}).get("video") or []
        if len(videos) > (self.kwargs.get("limit_mm_per_prompt") or {}).get("video", 1):
            raise ValueError("At most 1 video(s) may be provided in one prompt.")
        kwargs: dict[str, Any] = {}
        uuid = None
        if videos:
            frames, metadata = videos[0]
            kwargs = {
                "videos": [frames],
                "video_metadata": [metadata],
                **(prompt.get("mm_processor_kwargs") or {}),
            }
            uuids = (prompt.get("multi_modal_uuids") or {}).get("video")
            uuid = (
                uuids[0] if uuids else hashlib.sha256(frames.tobytes() + repr(metadata).encode()).hexdigest()
            )
        inputs = self.processor(text=[prompt["prompt"]], return_tensors="pt", **kwargs)
        return dict(inputs), uuid

    def _video_features(self, uuid: str | None):
        """The encoder cache: a video's embeddings are computed once and served until the cache is reset."""
        inner = self.hf_model.model
        compute = type(inner).get_video_features.__get__(inner)

        def cached(pixel_values_videos, video_grid_thw=None, **kwargs):
            cache = self.llm_engine.encoder_cache
            if uuid is None:
                return compute(pixel_values_videos, video_grid_thw, **kwargs)
            if uuid not in cache:
                cache[uuid] = compute(pixel_values_videos, video_grid_thw, **kwargs)
            return cache[uuid]

        return cached

    def _sample(
        self, index, inputs, uuid, params: SamplingParams, stop: set[int], generator
    ) -> CompletionOutput:
        """One completion. transformers runs the model (KV cache, mRoPE); the choice of each token is made here,
        by a logits processor that applies vLLM's processing and forces the chosen token."""
        from transformers import LogitsProcessorList

        model = self.hf_model
        chooser = _Chooser(params, generator, model.get_output_embeddings().weight.shape[0])
        model.model.get_video_features = self._video_features(uuid)
        try:
            output = model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=params.max_tokens or 16,
                logits_processor=LogitsProcessorList([chooser]),
                eos_token_id=sorted(stop) or None,
                pad_token_id=self.processor.tokenizer.pad_token_id,
                repetition_penalty=1.0,
                use_cache=True,
            )
        finally:
            del model.model.get_video_features
        tokens = output[0, inputs["input_ids"].shape[1] :].tolist()
        finish = "length"
        for pos, token in enumerate(tokens):
            if token in stop:
                tokens, finish = tokens[: pos + 1], "stop"
                break
        logprobs = [{t: Logprob(lp)} for t, lp in zip(tokens, chooser.logprobs)]
        text = self.processor.tokenizer.decode(tokens, skip_special_tokens=params.skip_special_tokens)
        return CompletionOutput(index, text, tokens, sum(chooser.logprobs[: len(tokens)]), logprobs, finish)


class _Chooser:
    """vLLM's sampler as a transformers logits processor: logit bias, temperature, top-k/top-p, then a draw from
    the request's generator (argmax when greedy); records the processed log-probability of the chosen token."""

    def __init__(self, params: SamplingParams, generator: torch.Generator, vocab: int) -> None:
        self.params = params
        self.generator = generator
        self.greedy = params.temperature < _SAMPLING_EPS
        self.bias = torch.zeros(vocab)
        for token, value in (params.logit_bias or {}).items():
            self.bias[token] = value
        self.logprobs: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores[0].float() + self.bias[: scores.shape[-1]]
        if not self.greedy:
            logits = _filter(logits / self.params.temperature, self.params.top_k, self.params.top_p)
        lp = torch.log_softmax(logits, -1)
        token = (
            int(lp.argmax()) if self.greedy else int(torch.multinomial(lp.exp(), 1, generator=self.generator))
        )
        self.logprobs.append(float(lp[token]))
        forced = torch.full_like(scores, -math.inf)
        forced[:, token] = 0.0
        return forced


def _filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(ordered, -1).cumsum(-1)
        drop = cumulative - torch.softmax(ordered, -1) > top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), -math.inf)
    return logits


# -- Ray executor (tensor parallel > 1) --------------------------------------------------------------------------
def _claim_ray_bundles(world_size: int, backend: str | None) -> list[int]:
    """What vLLM's Ray executor does (``v1/executor/ray_executor.py``, ``ray_utils.initialize_ray_cluster``): pick
    ``ray`` when Ray is up and the ranks do not fit the visible GPUs or a placement group is current; start one GPU
    worker per rank on the bundles named by ``VLLM_RAY_BUNDLE_INDICES``, else on the current group's first GPU
    bundles, else on a new placement group. A worker whose GPU is held already is never scheduled: vLLM waits
    forever, the fake raises ``TimeoutError`` after ``FAKE_VLLM_RAY_WAIT_S`` seconds."""
    if world_size == 1 or backend not in (None, "ray"):
        return []
    try:
        import ray
        from ray.util.placement_group import (
            get_current_placement_group,
            placement_group,
            remove_placement_group,
        )
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    except ImportError:
        return []
    if not ray.is_initialized():
        return []
    group = get_current_placement_group()
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    if backend is None and group is None and world_size <= len(visible):
        return []  # vLLM's multiprocessing executor on the visible GPUs
    wait_s = float(os.environ.get("FAKE_VLLM_RAY_WAIT_S", "8"))
    own = None
    if group is None:
        own = placement_group([{"GPU": 1, "CPU": 0}] * world_size)
        if not own.wait(timeout_seconds=wait_s):
            remove_placement_group(own)
            raise TimeoutError(
                f"fake vLLM: a new placement group of {world_size} GPUs cannot be reserved (the rollout pool holds "
                "them); real vLLM hangs here"
            )
        group = own
    if os.environ.get("VLLM_RAY_BUNDLE_INDICES"):
        bundles = [int(i) for i in os.environ["VLLM_RAY_BUNDLE_INDICES"].split(",")]
        if len(bundles) != world_size or len(set(bundles)) != world_size:
            raise AssertionError("VLLM_RAY_BUNDLE_INDICES must have the world size and no duplicates")
    else:
        bundles = [i for i, b in enumerate(group.bundle_specs) if b.get("GPU", 0)][:world_size]
    gpus = float(os.environ.get("VLLM_RAY_PER_WORKER_GPUS", "1.0"))

    @ray.remote(num_cpus=0, num_gpus=gpus)
    def worker_slot() -> str:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "")

    calls = [
        worker_slot.options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=b, placement_group_capture_child_tasks=True
            )
        ).remote()
        for b in bundles
    ]
    _, pending = ray.wait(calls, num_returns=len(calls), timeout=wait_s)
    for call in pending:
        ray.cancel(call, force=True)
    if own is not None:
        remove_placement_group(own)
    if pending:
        raise TimeoutError(
            f"fake vLLM: the Ray executor's GPU workers for bundles {bundles} cannot be scheduled (their GPUs are "
            "held); real vLLM hangs here"
        )
    return bundles
