"""``GRPOArguments``: TRL's ``GRPOConfig`` fields this project honours, grouped under the same "Parameters that control
..." headings, plus the rewards and the rollout engines."""

from __future__ import annotations

from dataclasses import dataclass, field

from invert4tvg.config.training_arguments import TrainingArguments
from invert4tvg.config_checks import check_grpo_arguments


@dataclass
class GRPOArguments(TrainingArguments):
    # Parameters that control generation
    num_generations: int = field(
        default=8,
        metadata={"help": "G: completions sampled per prompt; advantages compare them within the group."},
    )
    max_completion_length: int = field(default=1024, metadata={"help": "Most new tokens per completion."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the rollouts."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling of the rollouts (1: off)."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling of the rollouts (0: off)."})

    # Parameters that control the loss
    beta: float = field(
        default=0.04,
        metadata={"help": "KL coefficient against the reference model (0: no reference model is kept)."},
    )
    epsilon: float = field(
        default=0.2, metadata={"help": "Lower (and, without epsilon_high, upper) clip range."}
    )
    epsilon_high: float | None = field(
        default=None, metadata={"help": "Upper clip range (DAPO's clip-higher); None: epsilon."}
    )
    loss_type: str = field(
        default="dapo",
        metadata={
            "help": "Loss aggregation, TRL's names and default: dapo (token mean over all processes' completion "
            "tokens), grpo (per-sequence mean, then mean over sequences), bnpo (token mean of this process's batch), "
            "dr_grpo (token sum / (sequences x max_completion_length))."
        },
    )
    scale_rewards: str = field(
        default="group", metadata={"help": "Divide advantages by the std of the group, the batch, or none."}
    )
    num_iterations: int = field(
        default=1,
        metadata={"help": "Updates per batch of rollouts (mu); >1 keeps old log-probs for the ratio."},
    )
    importance_sampling_level: str = field(
        default="token", metadata={"help": "token (GRPO) | sequence (GSPO): where the ratio is taken."}
    )
    use_bias_correction_kl: bool = field(
        default=True, metadata={"help": "Weight the KL estimate by the importance ratio (TRL's option)."}
    )
    mask_truncated_completions: bool = field(
        default=False, metadata={"help": "Leave completions cut at max_completion_length out of the loss."}
    )

    # Parameters that control the policy passes
    shared_prefix: bool = field(
        default=True,
        metadata={
            "help": "Old-policy, reference and current passes put each prompt (and its video) once per group, "
            "followed by its G completions, under an attention mask; same loss as the repeated layout, the prompt "
            "computed once instead of G times. Needs attn_implementation sdpa or eager; micro-batches then hold "
            "whole groups (per_device_train_batch_size // num_generations, at least one)."
        },
    )
    head_aux_loss_weight: float = field(
        default=1.0,
        metadata={
            "help": "Heads with a module of their own (loc, meco): weight of the head's supervised loss, on the "
            "grounding completions' ground truth, added to the GRPO loss, so the module trains with the policy. "
            "0: the module stays frozen in RL. Heads without a module have no such loss (docs/heads.md)."
        },
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "TRL's default: no dropout in RL, so the old, reference and current passes agree."},
    )

    # Parameters that control the rewards (docs/rewards.md)
    reward_funcs: list[str] = field(
        default_factory=lambda: ["invert4tvg"],
        metadata={
            "help": "Registered reward names (docs/rewards.md) or your own by path: module.path:function or "
            "path/to/file.py:function."
        },
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per reward_funcs entry (None: 1 each)."}
    )
    invert_reward_weight: float = field(
        default=1.0, metadata={"help": "Weight of vc/ar/vd inside `invert4tvg`."}
    )
    format_reward_weight: float = field(
        default=1.0, metadata={"help": "Weight of format inside `invert4tvg`."}
    )
    invert_reward: str = field(default="binary", metadata={"help": "binary | cosine (Table 3 ablation)"})
    invert_format: str = field(
        default="think_answer",
        metadata={
            "help": "Format reward of VC/AR/VD samples: think_answer (the paper's eq. 11, <think>..</think> "
            "<answer>..</answer>) or answer_only (<answer>..</answer>, as the public Invert4TVG code scores them)."
        },
    )
    reward_error_policy: str = field(default="raise", metadata={"help": "raise | zero (score 0 and count)"})

    # Parameters that control the rollout engines (docs/rollouts.md)
    rollout_backend: str = field(default="hf", metadata={"help": "hf | ray-hf | vllm | ray-vllm"})
    rollout_workers: int = field(
        default=1, metadata={"help": "Ray actors generating rollouts (ray-* backends)."}
    )
    rollout_batch_sequences: int = field(
        default=64, metadata={"help": "Most sequences one generate call batches together."}
    )
    ray_address: str | None = field(default=None, metadata={"help": "None: start a local Ray; auto: join."})

    # Parameters that control generation acceleration powered by vLLM (rollout_backend vllm | ray-vllm;
    # TRL's names; invert4tvg/rollout/options.py)
    vllm_gpu_memory_utilization: float | None = field(
        default=None,
        metadata={
            "help": "GPU memory fraction vLLM may take. None: 0.3 for vllm (trainer's GPU), 0.9 for ray-vllm."
        },
    )
    vllm_enable_sleep_mode: bool | None = field(
        default=None,
        metadata={
            "help": "Sleep between calls (weights to CPU, KV cache freed). None: on for vllm, off for ray-vllm."
        },
    )
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs per vLLM engine."})
    vllm_max_model_length: int | None = field(
        default=None,
        metadata={"help": "Prompt + completion tokens per sequence. None: the model's own limit."},
    )
    vllm_enforce_eager: bool = field(
        default=False, metadata={"help": "No CUDA graphs: slower, starts faster."}
    )

    # Parameters that control the correction for rollout log-probs that differ from the trainer's
    # (TRL's names; they apply to any engine with its own model copy, not only vLLM)
    vllm_importance_sampling_correction: bool = field(
        default=True,
        metadata={
            "help": "Correct for rollouts whose log-probs differ from the trainer's (engines with their own model "
            "copy): TRL's truncated/masked importance sampling. The gap is logged every step either way."
        },
    )
    vllm_importance_sampling_mode: str = field(
        default="token_truncate",
        metadata={"help": "token_truncate | token_mask | sequence_truncate | sequence_mask (TRL's modes)"},
    )
    vllm_importance_sampling_clip_max: float | None = field(
        default=3.0,
        metadata={"help": "Upper bound of the importance-sampling ratio (truncate / mask modes)."},
    )
    vllm_importance_sampling_clip_min: float | None = field(
        default=None, metadata={"help": "Lower bound of the ratio; None: none."}
    )

    @property
    def records_per_step(self) -> int:
        """Prompts each device draws per step: its completions (TRL's unit) divided into groups of G."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps // self.num_generations

    def __post_init__(self) -> None:
        super().__post_init__()
        check_grpo_arguments(self)
