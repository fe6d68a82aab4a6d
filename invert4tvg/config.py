"""Configuration: flat YAML files with command-line overrides, parsed by TRL's ``TrlParser``.

Field names follow TRL (``GRPOConfig``: ``num_generations``, ``beta``, ``epsilon``, ``loss_type``, ...) and TRL's
``ModelConfig`` (``model_name_or_path``, ``use_peft``, ``lora_r``, ...), so a TRL user can read a config here
without a glossary. Only fields this project honours exist: an unknown key in a YAML file is an error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invert4tvg.data.frames import VideoSampling
from rewards.nlp.lexicon import ASPECTUAL_VERBS


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="Qwen/Qwen2.5-VL-3B-Instruct",
        metadata={"help": "Hub id or local directory (save_pretrained layout)."},
    )
    head: str | None = field(
        default=None,
        metadata={
            "help": "Grounding head: text_timestamps | vtimellm | frame_seg (docs/heads.md). None: the head the "
            "model was saved with (invert4tvg_head.json), else text_timestamps."
        },
    )
    head_frames: int | None = field(
        default=None,
        metadata={
            "help": "frame_seg: answer characters, one per equal part of the video. None: saved, else 25."
        },
    )
    head_loss_ramp_epochs: float | None = field(
        default=None,
        metadata={
            "help": "frame_seg: epochs over which the SFT loss weights move from LM only to (0.2, 0.2667, 0.2667, "
            "0.2667) for (LM, BCE, Tversky, Dice). None: saved, else 6 (the paper's)."
        },
    )
    dtype: str = field(
        default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU), bfloat16, float32."}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "e.g. sdpa, flash_attention_2."})
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "Language-model modules that get adapters (the vision tower never does)."},
    )
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Time-R1 freezes the vision encoder."})
    gradient_checkpointing: bool = False


@dataclass
class DataArguments:
    dataset_format: str = field(
        default="tvg-json",
        metadata={"help": "charades-sta | tvg-json | activitynet | qvhighlights | time-r1"},
    )
    train_annotations: str | None = None
    val_annotations: str | None = None
    test_annotations: str | None = None
    durations: str | None = field(
        default=None, metadata={"help": "Charades csv or a duration map (charades-sta)."}
    )
    video_dir: str | None = None
    dataset_source: str | None = field(default=None, metadata={"help": "Source label of the records."})
    on_bad_record: str = field(
        default="raise", metadata={"help": "raise (fail fast) | skip (count and go on)"}
    )
    span_overshoot: str = field(
        default="drop",
        metadata={
            "help": "Training spans that leave the video: drop (clip up to 1 s over, reject more; counted), clip "
            "(clip all to [0, duration]; counted) or keep. val/test splits always keep the ground truth as "
            "published and count overshoots (docs/data.md)."
        },
    )
    max_bad_video_fraction: float = field(
        default=0.05,
        metadata={"help": "Stop training when more than this fraction of videos failed to decode."},
    )
    video_fps: float = 2.0
    video_min_frames: int = 4
    video_max_frames: int = 768
    video_total_pixels: int = 3584 * 28 * 28
    video_min_pixels: int = 16 * 28 * 28
    video_max_pixels: int = 768 * 28 * 28
    frame_cache_dir: str | None = field(default=None, metadata={"help": "Disk cache of decoded frames."})
    frame_cache_gb: float = 20.0

    def sampling(self) -> VideoSampling:
        return VideoSampling(
            fps=self.video_fps,
            min_frames=self.video_min_frames,
            max_frames=self.video_max_frames,
            total_pixels=self.video_total_pixels,
            min_pixels=self.video_min_pixels,
            max_pixels=self.video_max_pixels,
        )


@dataclass
class TaskArguments:
    tvg_probability: float = field(default=0.8, metadata={"help": "p: chance an iteration trains grounding."})
    invert_tasks: list[str] = field(default_factory=lambda: ["vc", "ar", "vd"])
    invert_task_weights: list[float] | None = None
    task_sampling: str = field(default="per_iteration", metadata={"help": "per_iteration | per_sample"})
    verb_mask: str = field(
        default="all", metadata={"help": "VC masks all verbs (all) or one sampled verb (one)."}
    )
    aspectual_verbs: list[str] = field(
        default_factory=lambda: sorted(ASPECTUAL_VERBS),
        metadata={
            "help": "Verb lemmas left out of the VC mask and of the AR/VD targets when another verb follows them "
            '("person begins sneezing" masks and asks for "sneeze" only). [] keeps every verb, as the public code.'
        },
    )
    prompt_templates: str | None = field(
        default=None, metadata={"help": "YAML file overriding prompt templates."}
    )


@dataclass
class TrainingArguments:
    """Optimisation, schedule, logging and checkpointing, shared by GRPO and SFT."""

    output_dir: str = "runs/grpo"
    run_name: str | None = None
    setting: str | None = field(
        default=None, metadata={"help": "Label for reports: time_r1, invert4tvg, ..."}
    )
    seed: int = 42
    learning_rate: float = 5e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lr_scheduler_type: str = field(default="constant", metadata={"help": "constant | linear | cosine"})
    warmup_ratio: float = 0.0
    per_device_train_batch_size: int = field(
        default=4, metadata={"help": "Prompts (videos) per device per step."}
    )
    num_train_epochs: float = 2.0
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (overrides epochs)."})
    logging_steps: int = 1
    save_steps: int = 0
    save_total_limit: int | None = 2
    eval_steps: int = 0
    eval_max_samples: int | None = None
    report_to: list[str] = field(
        default_factory=lambda: ["tensorboard"], metadata={"help": "tensorboard, wandb"}
    )
    resume: str | None = field(default=None, metadata={"help": "latest | path to a checkpoint directory"})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the run already in output_dir (its files only); without it a non-empty "
            "output_dir is refused unless --resume is given."
        },
    )
    logprob_batch_size: int = field(
        default=16, metadata={"help": "Sequences per forward/backward micro-batch."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        self.report_to = [r for r in self.report_to if r != "none"]  # transformers' "none" = no tracker
        from invert4tvg.config_checks import check_training_arguments

        check_training_arguments(self)  # at parse time, before a model, data or output_dir is touched


@dataclass
class GRPOArguments(TrainingArguments):
    num_generations: int = 8
    max_completion_length: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    beta: float = 0.04
    epsilon: float = 0.2
    epsilon_high: float | None = None
    loss_type: str = "grpo"
    scale_rewards: str = "group"
    num_iterations: int = 1
    importance_sampling_level: str = "token"
    use_bias_correction_kl: bool = True
    mask_truncated_completions: bool = False
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "TRL's default: no dropout in RL, so the old, reference and current passes agree."},
    )
    reward_funcs: list[str] = field(default_factory=lambda: ["invert4tvg"])
    reward_weights: list[float] | None = None
    invert_reward_weight: float = field(
        default=1.0, metadata={"help": "Weight of vc/ar/vd inside `invert4tvg`."}
    )
    format_reward_weight: float = field(
        default=1.0, metadata={"help": "Weight of format inside `invert4tvg`."}
    )
    inversion_reward: str = field(default="binary", metadata={"help": "binary | cosine (Table 3 ablation)"})
    inversion_format: str = field(
        default="think_answer",
        metadata={
            "help": "Format reward of VC/AR/VD samples: think_answer (the paper's eq. 11, <think>..</think> "
            "<answer>..</answer>) or answer_only (<answer>..</answer>, as the public Invert4TVG code scores them)."
        },
    )
    reward_error_policy: str = field(default="raise", metadata={"help": "raise | zero (score 0 and count)"})
    rollout_backend: str = field(default="hf", metadata={"help": "hf | ray-hf | vllm | ray-vllm"})
    rollout_workers: int = 1
    rollout_batch_sequences: int = 64
    ray_address: str | None = field(default=None, metadata={"help": "None: start a local Ray; auto: join."})
    # vLLM engines (rollout_backend vllm | ray-vllm); TRL's names. docs/rollouts.md, invert4tvg/rollout/options.py.
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
    vllm_tensor_parallel_size: int = 1
    vllm_max_model_length: int | None = field(
        default=None,
        metadata={"help": "Prompt + completion tokens per sequence. None: the model's own limit."},
    )
    vllm_enforce_eager: bool = field(
        default=False, metadata={"help": "No CUDA graphs: slower, starts faster."}
    )
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
    vllm_importance_sampling_clip_max: float | None = 3.0
    vllm_importance_sampling_clip_min: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        from invert4tvg.config_checks import check_grpo_arguments

        check_grpo_arguments(self)


@dataclass
class SFTArguments(TrainingArguments):
    output_dir: str = "runs/sft"
    invert_sft_fraction: float = field(
        default=0.0,
        metadata={"help": "Fraction of examples that are Invert-SFT (clip -> query, paper appendix D)."},
    )
    invert_sft_tasks: list[str] = field(
        default_factory=lambda: ["vd"],
        metadata={
            "help": "Inversion prompts Invert-SFT draws from (uniformly): vd (the paper: describe -> the query), "
            "vc (fill in the verb -> the query), ar (name the action -> its verb as the query writes it)."
        },
    )
    grounding_annotations: str | None = field(
        default=None,
        metadata={
            "help": "Grounding examples come from this file (same dataset_format and video_dir) instead of the "
            "training queries, which then serve Invert-SFT only: a warm start that learns the answer format on "
            "another temporal question and leaves the benchmark's grounding to RL (the lookalike testbed)."
        },
    )
    max_completion_length: int = 256
    think_template: str = field(
        default="I look for when the event happens.",
        metadata={
            "help": "The <think> text of grounding targets ({query}, {start}, {end}, {duration} available)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.invert_sft_tasks) - {"vc", "ar", "vd"})
        if unknown or (self.invert_sft_fraction > 0 and not self.invert_sft_tasks):
            raise ValueError(
                f"invert_sft_tasks must be a non-empty subset of vc, ar, vd; got {self.invert_sft_tasks}"
            )


def parse_config(
    types: tuple[type, ...], argv: list[str] | None = None, ignore_unknown: bool = False
) -> tuple[Any, ...]:
    """``--config file.yaml`` plus ``--field value`` overrides (the command line wins), TRL style.

    Unknown keys are errors, except with ``ignore_unknown`` (reading a training config for its data and model
    settings only, as ``invert4tvg eval`` does)."""
    from trl import TrlParser

    parser = TrlParser(types)
    if ignore_unknown:
        return parser.parse_args_and_config(args=argv, fail_with_unknown_args=False)
    return parser.parse_args_and_config(args=argv)


def to_dict(*configs: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for config in configs:
        merged.update(dataclasses.asdict(config))
    return merged


def tracker_config(config: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters as TensorBoard accepts them (scalars and strings only)."""
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in config.items()}


def resolve_path(path: str | None, base: str | Path | None = None) -> Path | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() or base is None else Path(base) / p
