"""Engine options from a run's configuration (``GRPOArguments``), with defaults that depend on where vLLM runs.

``vllm`` shares the trainer's GPU: sleep mode on (weights to CPU memory and KV cache freed between calls) and 30%
of the GPU by default. ``ray-vllm`` workers own their GPUs: no sleep, 90%. Set the ``vllm_*`` fields to override.
"""

from __future__ import annotations

from typing import Any

_DEFAULTS = {"vllm": (0.3, True), "ray-vllm": (0.9, False)}  # gpu_memory_utilization, sleep mode


def vllm_engine_options(args: Any, backend: str) -> dict[str, Any]:
    """``VLLMEngine`` keyword arguments for ``backend`` (vllm | ray-vllm) from the ``vllm_*`` fields of ``args``."""
    memory_default, sleep_default = _DEFAULTS[backend]
    memory = (
        args.vllm_gpu_memory_utilization if args.vllm_gpu_memory_utilization is not None else memory_default
    )
    if not 0.0 < memory <= 1.0:
        raise ValueError(f"vllm_gpu_memory_utilization must be in (0, 1], got {memory}")
    if args.vllm_tensor_parallel_size < 1:
        raise ValueError(
            f"vllm_tensor_parallel_size must be at least 1, got {args.vllm_tensor_parallel_size}"
        )
    if backend == "vllm" and args.vllm_tensor_parallel_size > 1:
        raise ValueError(
            "vllm_tensor_parallel_size > 1 needs rollout_backend ray-vllm (vLLM's Ray executor on GPUs of its own); "
            "the in-process vllm engine shares the trainer's single GPU"
        )
    return {
        "gpu_memory_utilization": memory,
        "colocate": args.vllm_enable_sleep_mode if args.vllm_enable_sleep_mode is not None else sleep_default,
        "tensor_parallel_size": args.vllm_tensor_parallel_size,
        "max_model_len": args.vllm_max_model_length,
        "enforce_eager": args.vllm_enforce_eager,
    }


def engine_options(args: Any) -> dict[str, Any]:
    """The extra ``build_engine`` keyword arguments of ``args.rollout_backend``."""
    backend = args.rollout_backend
    if backend == "vllm":
        return vllm_engine_options(args, backend)
    if backend == "ray-vllm":
        return {"vllm_options": vllm_engine_options(args, backend)}
    return {}
