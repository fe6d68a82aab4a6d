"""Per-GPU memory of a training run, planned before step 1 from the model built on the meta device.

``invert4tvg plan`` prints it; the recipes run the same check before any model is loaded and refuse a run that
will not fit, naming the largest term and the cheapest change that makes it fit (docs/training.md, "Memory").

The terms (bytes per GPU, ``N`` processes, ``T`` trained and ``F`` frozen parameters):

- **weights**: trained parameters in fp32 (master weights), frozen ones in the load dtype; /N under FSDP2;
- **gradients**: 4 B per trained parameter, /N under FSDP2; DDP adds its gradient buckets (another 4 B each);
- **optimizer**: AdamW's two fp32 moments, 8 B per trained parameter; /N under FSDP2;
- **reference**: full fine-tuning with ``beta > 0``: under DDP a copy in the policy's dtypes (it must compute exactly
  as the policy, see ``grpo/modelprep.build_reference``), under FSDP2 a bf16 copy /N; LoRA: none (adapter off);
- **activations**: with gradient checkpointing, every decoder layer's input for one micro-batch
  (``per_device_train_batch_size`` sequences, TRL's micro-batch, of video + prompt + ``max_completion_length`` tokens) plus one layer's
  recomputed forward and its backward, and the frozen vision tower's forward; without checkpointing every layer's;
- **logits**: one chunk of 512 positions x vocabulary in fp32 with its logsumexp and gradient
  (``modeling/logprobs.py``);
- **unsharded**: FSDP2's all-gathered parameters in bf16 while a layer computes: the root group (embeddings, LM
  head, final norm, vision merger) for the whole pass, two layers (the current one and the prefetched next) and one
  layer's unsharded fp32 gradient before its reduce-scatter;
- **generation**: the KV cache of one ``generate`` call (``per_device_train_batch_size x num_generations``
  sequences, at most ``rollout_batch_sequences``) and, under FSDP2, the whole model gathered in bf16 for that call;
- **vllm**: a colocated engine's share (``rollout_backend: vllm``): ``vllm_gpu_memory_utilization`` of the GPU;
- **overhead**: CUDA context and allocator slack, a fixed 2 GiB.

The peak is what persists (weights, optimizer, reference, overhead) plus the larger of the update phase
(gradients, activations, logits, unsharded) and the rollout phase (generation, vllm). Everything here is
arithmetic on parameter counts and shapes; tests/test_memory_plan.py checks it against hand-computed values and
against the tiny model's measured peak on CPU.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any

GIB = 2**30
PROMPT_TOKENS = 256  # system prompt + task instruction + chat markup (the TVG prompt is about 150 tokens)
LOGIT_CHUNK = 512  # modeling/logprobs.DEFAULT_CHUNK_SIZE
OVERHEAD_BYTES = 2 * GIB
BUDGET_ENV = (
    "INVERT4TVG_GPU_MEMORY_GB"  # the per-GPU budget the start-of-training check uses instead of the device's
)


@dataclass(frozen=True)
class Shapes:
    """What the plan needs from the model: parameter counts by role and the layer shapes."""

    language: int  # decoder (embeddings, layers, norm, LM head)
    vision: int  # vision tower incl. merger
    root: int  # parameters outside every layer and vision block (FSDP2's root group)
    largest_layer: int
    lora: int  # LoRA parameters for the configured rank and targets
    layers: int
    hidden: int
    intermediate: int
    kv_dim: int
    vocab: int
    vision_hidden: int
    vision_intermediate: int


def shapes(model_name_or_path: str, lora_r: int = 0, lora_targets: tuple[str, ...] = ()) -> Shapes:
    """Parameter counts and shapes of the model, built on the meta device (nothing downloaded or allocated)."""
    from invert4tvg.modeling.architectures import model_config

    return shapes_of(model_config(model_name_or_path), lora_r, lora_targets)


def shapes_of(config, lora_r: int = 0, lora_targets: tuple[str, ...] = ()) -> Shapes:
    """:func:`shapes` of a ``Qwen2_5_VLConfig``."""
    from invert4tvg.modeling.architectures import meta_model

    model = meta_model(config)
    text, vision = config.text_config, config.vision_config
    layer_names = ("Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock")
    layer_params = [
        sum(p.numel() for p in m.parameters()) for m in model.modules() if type(m).__name__ in layer_names
    ]
    lora = 0
    for name, module in model.named_modules():
        if (
            "visual" not in name
            and name.rpartition(".")[2] in lora_targets
            and hasattr(module, "in_features")
        ):
            lora += lora_r * (module.in_features + module.out_features)
    counts = {"language": 0, "vision": 0}
    for name, param in model.named_parameters():
        counts["vision" if "visual" in name else "language"] += param.numel()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return Shapes(
        language=counts["language"],
        vision=counts["vision"],
        root=counts["language"] + counts["vision"] - sum(layer_params),
        largest_layer=max(layer_params),
        lora=lora,
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        kv_dim=text.num_key_value_heads * head_dim,
        vocab=text.vocab_size,
        vision_hidden=vision.hidden_size,
        vision_intermediate=vision.intermediate_size,
    )


@dataclass(frozen=True)
class Setup:
    """The run settings the plan depends on (the config's field names)."""

    num_processes: int = 1
    fsdp: bool = False
    use_peft: bool = False
    freeze_vision_tower: bool = True
    gradient_checkpointing: bool = True
    half_precision: bool = True  # dtype bf16 (GPU default): frozen weights and compute in 2 bytes
    beta: float = 0.04
    video_tokens: int = 3584
    max_completion_length: int = 1024
    micro_batch: int = 4  # per_device_train_batch_size: sequences per forward/backward (TRL's unit)
    accumulation: int = 2  # gradient_accumulation_steps
    rollout_sequences: int = 8
    vllm_fraction: float = 0.0  # colocated vLLM's share of the GPU
    prompt_tokens: int = PROMPT_TOKENS

    @property
    def sequence_length(self) -> int:
        return self.video_tokens + self.prompt_tokens + self.max_completion_length


def setup_from_config(model_args: Any, data_args: Any, args: Any, num_processes: int) -> Setup:
    """A :class:`Setup` from a recipe's ``ModelArguments``, ``DataArguments`` and ``GRPOArguments`` / ``SFTArguments``."""
    half = str(getattr(model_args, "dtype", "auto")) in ("auto", "bfloat16", "float16")
    per_step = (
        args.per_device_train_batch_size * args.gradient_accumulation_steps
    )  # completions (or examples)
    vllm = 0.0
    if getattr(args, "rollout_backend", "hf") == "vllm":
        vllm = getattr(args, "vllm_gpu_memory_utilization", None) or 0.3
    return Setup(
        num_processes=num_processes,
        fsdp=bool(getattr(args, "fsdp", "")) and num_processes > 1,  # one process trains unsharded
        use_peft=bool(model_args.use_peft),
        freeze_vision_tower=bool(model_args.freeze_vision_tower),
        gradient_checkpointing=bool(model_args.gradient_checkpointing),
        half_precision=half,
        beta=float(getattr(args, "beta", 0.0)),
        video_tokens=math.ceil(data_args.video_total_pixels / (28 * 28)),
        max_completion_length=int(
            getattr(args, "max_completion_length", 0) or getattr(args, "max_length", 0) or 0
        ),
        micro_batch=int(args.per_device_train_batch_size),
        accumulation=int(args.gradient_accumulation_steps),
        rollout_sequences=min(per_step, int(getattr(args, "rollout_batch_sequences", per_step))),
        vllm_fraction=float(vllm),
    )


@dataclass(frozen=True)
class Plan:
    terms: dict[str, float]  # bytes per GPU
    persistent: tuple[str, ...] = ("weights", "optimizer", "reference", "overhead")
    update: tuple[str, ...] = ("gradients", "activations", "logits", "unsharded")
    rollout: tuple[str, ...] = ("generation", "vllm")

    @property
    def peak(self) -> float:
        phase = max(sum(self.terms[k] for k in self.update), sum(self.terms[k] for k in self.rollout))
        return sum(self.terms[k] for k in self.persistent) + phase

    def largest(self) -> str:
        return max(self.terms, key=self.terms.get)


def plan(shapes: Shapes, setup: Setup, gpu_memory_bytes: float | None = None) -> Plan:
    s, n = shapes, setup.num_processes
    shard = n if setup.fsdp else 1
    half = 2 if setup.half_precision else 4
    total = s.language + s.vision
    if setup.use_peft:
        trained = s.lora
        frozen = total
    else:
        trained = s.language + (0 if setup.freeze_vision_tower else s.vision)
        frozen = total - trained
    weights = (4 * trained + half * frozen) / shard
    gradients = 4 * trained / shard + (0 if setup.fsdp or n == 1 else 4 * trained)  # DDP's buckets
    optimizer = 8 * trained / shard
    reference = 0.0
    if setup.beta != 0.0 and not setup.use_peft:
        reference = half * total / n if setup.fsdp else 4 * trained + half * frozen
    # Activations of one micro-batch: b sequences of L tokens. The residual stream is fp32 when the embeddings are
    # trained in fp32 under autocast (DDP, full fine-tuning), else in the compute dtype.
    b, length = setup.micro_batch, setup.sequence_length
    tokens = b * length
    residual = 4 if not setup.fsdp and not setup.use_peft else half
    layer = 2 * tokens * (5 * s.hidden + 2 * s.kv_dim + 4 * s.intermediate) * half + 2 * tokens * s.hidden * 4
    kept = s.layers * tokens * s.hidden * residual
    if not setup.gradient_checkpointing:
        kept = s.layers * layer / 2
    patches = b * 4 * setup.video_tokens  # 14x14 patches before the 2x2 merge
    vision = patches * (6 * s.vision_hidden + 3 * s.vision_intermediate) * half
    activations = kept + layer + vision + tokens * s.hidden * residual  # + the embeddings
    logits = min(LOGIT_CHUNK, b * setup.max_completion_length) * s.vocab * 4 * 3
    unsharded = 0.0
    if setup.fsdp:
        unsharded = half * s.root + 2 * half * s.largest_layer + 4 * s.largest_layer
    kv_cache = setup.rollout_sequences * length * s.layers * 2 * s.kv_dim * half
    generation = kv_cache + (half * total if setup.fsdp else 0)
    vllm = setup.vllm_fraction * gpu_memory_bytes if gpu_memory_bytes else 0.0
    return Plan(
        {
            "weights": weights,
            "gradients": gradients,
            "optimizer": optimizer,
            "reference": reference,
            "activations": activations,
            "logits": logits,
            "unsharded": unsharded,
            "generation": generation,
            "vllm": vllm,
            "overhead": OVERHEAD_BYTES,
        }
    )


# Changes that lower the peak, cheapest first: sharding and smaller micro-batches change no result; fewer video
# pixels change what the model sees; LoRA changes what is trained.
def _fixes(setup: Setup) -> list[tuple[str, Setup]]:
    fixes = []
    if not setup.fsdp and setup.num_processes > 1 and not setup.use_peft:
        fixes.append(("fsdp: full_shard (FSDP2; the same training, sharded)", replace(setup, fsdp=True)))
    size, accumulation = setup.micro_batch, setup.accumulation
    while size > 1 and size % 2 == 0:
        size, accumulation = size // 2, accumulation * 2
        fixes.append(
            (
                f"per_device_train_batch_size: {size} with gradient_accumulation_steps: {accumulation} (the same "
                "update, smaller micro-batches)",
                replace(setup, micro_batch=size, accumulation=accumulation),
            )
        )
    for fraction in (2, 4):
        fewer = replace(setup, video_tokens=setup.video_tokens // fraction)
        fixes.append((f"video_total_pixels / {fraction} (fewer frames or pixels per video)", fewer))
    if not setup.use_peft:
        fixes.append(("use_peft: true (LoRA)", replace(setup, use_peft=True)))
    return fixes


def cheapest_fix(shapes: Shapes, setup: Setup, budget: float) -> str | None:
    """The first change (alone, then together with sharding) whose plan fits ``budget`` bytes."""
    for label, changed in _fixes(setup):
        if plan(shapes, changed, budget).peak <= budget:
            return label
    if not setup.fsdp and setup.num_processes > 1:
        sharded = replace(setup, fsdp=True)
        for label, changed in _fixes(sharded):
            if plan(shapes, changed, budget).peak <= budget:
                return f"fsdp: full_shard and {label}"
    return None


def render(result: Plan, budget: float | None = None) -> str:
    """The plan as a table of GiB per GPU, with the peak and, given a budget, whether it fits."""
    lines = [f"{'term':<12} {'GiB/GPU':>8}  phase"]
    for name, value in result.terms.items():
        phase = "always" if name in result.persistent else "update" if name in result.update else "rollout"
        lines.append(f"{name:<12} {value / GIB:>8.2f}  {phase}")
    lines.append(f"{'peak':<12} {result.peak / GIB:>8.2f}")
    if budget:
        verdict = "fits" if result.peak <= budget else "does NOT fit"
        lines.append(f"{verdict} in {budget / GIB:g} GiB per GPU")
    return "\n".join(lines)


def refusal(shapes: Shapes, setup: Setup, budget: float) -> str | None:
    """None when the plan fits ``budget`` bytes; else one line: the peak, the largest term, the cheapest fix."""
    result = plan(shapes, setup, budget)
    if result.peak <= budget:
        return None
    largest = result.largest()
    fix = cheapest_fix(shapes, setup, budget)
    advice = f"cheapest fix: {fix}" if fix else "no single change fits: use more or larger GPUs"
    return (
        f"this run needs about {result.peak / GIB:.1f} GiB per GPU and has {budget / GIB:g} GiB: the largest term is "
        f"{largest} ({result.terms[largest] / GIB:.1f} GiB); {advice}. See `invert4tvg plan` and docs/training.md "
        "(Memory)."
    )


def device_budget() -> float | None:
    """The per-GPU budget in bytes: ``INVERT4TVG_GPU_MEMORY_GB`` when set, else this process's CUDA device's
    memory, else None (no GPU: nothing to check)."""
    if os.environ.get(BUDGET_ENV):
        return float(os.environ[BUDGET_ENV]) * GIB
    import torch

    if not torch.cuda.is_available():
        return None
    return float(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)


def check_fits(model_args: Any, data_args: Any, args: Any, num_processes: int) -> None:
    """Refuse (:class:`~invert4tvg.config_checks.ConfigError`) a run whose plan exceeds the GPU, before any model is
    loaded; nothing to check without a GPU or a ``INVERT4TVG_GPU_MEMORY_GB`` budget."""
    budget = device_budget()
    if budget is None:
        return
    from invert4tvg.config_checks import ConfigError

    dims = shapes(model_args.model_name_or_path, model_args.lora_r, tuple(model_args.lora_target_modules))
    problem = refusal(dims, setup_from_config(model_args, data_args, args, num_processes), budget)
    if problem:
        raise ConfigError(problem)
