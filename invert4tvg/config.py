"""Configuration: flat YAML files with command-line overrides, parsed by TRL's ``TrlParser``.

Field names follow TRL (``GRPOConfig``: ``num_generations``, ``beta``, ``epsilon``, ``loss_type``, ...) and TRL's
``ModelConfig`` (``model_name_or_path``, ``use_peft``, ``lora_r``, ...), so a TRL user can read a config here
without a glossary. Only fields this project honours exist: an unknown key in a YAML file is an error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from invert4tvg.config_checks import (
    ConfigError,
    check_grpo_arguments,
    check_report_to,
    check_training_arguments,
)
from invert4tvg.data.frames import VideoSampling
from rewards.base import INVERSION_TASKS
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
            "help": "Grounding head: text_timestamps | vtimellm | frame_seg | loc | meco (docs/heads.md). None: the head the "
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
    head_width: int | None = field(
        default=None,
        metadata={
            "help": "loc, meco: channels of the head's module (convolutions, shared space). None: saved, else 256."
        },
    )
    head_loss_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "loc: SFT weights of (BCE, smooth-L1, GIoU), default (2, 5, 2) as VideoExpert's code; meco: of "
            "L_ST, default 1. The LM loss has weight 1. None: saved, else the default."
        },
    )
    dtype: str = field(
        default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU), bfloat16, float32."}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "e.g. sdpa, flash_attention_2."})
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank (with use_peft)."})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA scaling alpha (with use_peft)."})
    lora_dropout: float = field(
        default=0.05, metadata={"help": "Dropout on the LoRA inputs (with use_peft)."}
    )
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "Language-model modules that get adapters (the vision tower never does)."},
    )
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Time-R1 freezes the vision encoder."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in backward: less memory, ~30% slower."}
    )


@dataclass
class DataArguments:
    dataset_format: str = field(
        default="tvg-json",
        metadata={"help": "charades-sta | tvg-json | activitynet | qvhighlights | time-r1"},
    )
    train_annotations: str | None = field(
        default=None, metadata={"help": "Annotation file of the training split."}
    )
    val_annotations: str | None = field(
        default=None, metadata={"help": "Validation split: evaluated every eval_steps (and at step 0)."}
    )
    test_annotations: str | None = field(
        default=None, metadata={"help": "Test split: evaluated into OUTPUT_DIR/eval when training ends."}
    )
    durations: str | None = field(
        default=None, metadata={"help": "Charades csv or a duration map (charades-sta)."}
    )
    video_dir: str | None = field(
        default=None, metadata={"help": "Directory the annotations' video names are relative to."}
    )
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
    video_fps: float = field(
        default=2.0, metadata={"help": "Frames sampled per second of video (the paper: 2)."}
    )
    video_min_frames: int = field(default=4, metadata={"help": "Fewest frames sampled from a video."})
    video_max_frames: int = field(default=768, metadata={"help": "Most frames sampled from a video."})
    video_total_pixels: int = field(
        default=3584 * 28 * 28,
        metadata={
            "help": "Pixel budget of all frames of a video together (qwen-vl-utils' VIDEO_TOTAL_PIXELS)."
        },
    )
    video_min_pixels: int = field(default=16 * 28 * 28, metadata={"help": "Fewest pixels per frame."})
    video_max_pixels: int = field(default=768 * 28 * 28, metadata={"help": "Most pixels per frame."})
    frame_cache_dir: str | None = field(default=None, metadata={"help": "Disk cache of decoded frames."})
    frame_cache_gb: float = field(
        default=20.0,
        metadata={"help": "Size limit of frame_cache_dir (least recently used entries go first)."},
    )

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
    invert_tasks: list[str] = field(
        default_factory=lambda: list(INVERSION_TASKS),
        metadata={"help": "Inversion tasks drawn when an iteration does not train grounding: vc, ar, vd."},
    )
    invert_task_weights: list[float] | None = field(
        default=None, metadata={"help": "Relative odds of invert_tasks (None: uniform)."}
    )
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

    output_dir: str = field(
        default="runs/grpo",
        metadata={"help": "Run directory: metadata.json, metrics.jsonl, checkpoints/, final/, eval/."},
    )
    run_name: str | None = field(
        default=None,
        metadata={"help": "Name in reports and trackers (the W&B run name); default: output_dir."},
    )
    setting: str | None = field(
        default=None, metadata={"help": "Label for reports: time_r1, invert4tvg, ..."}
    )
    seed: int = field(
        default=42,
        metadata={"help": "Seeds data order, task draws, sampling and initialisation of new modules."},
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate (peak, after warmup)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay."})
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "Clip the gradient norm of each update to this (0: no clipping)."}
    )
    lr_scheduler_type: str = field(default="constant", metadata={"help": "constant | linear | cosine"})
    warmup_ratio: float = field(
        default=0.0,
        metadata={"help": "Fraction of the optimizer updates spent warming the learning rate up."},
    )
    per_device_train_batch_size: int = field(
        default=8,
        metadata={
            "help": "TRL's meaning: sequences per device in one forward/backward micro-batch (GRPO: completions, "
            "SFT: examples). A step trains on per_device_train_batch_size x gradient_accumulation_steps of them per "
            "device; GRPO draws that / num_generations prompts for it."
        },
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata={
            "help": "TRL's meaning: micro-batches whose gradients are summed before one optimizer update. GRPO "
            "generates for all of them at once (TRL's steps_per_generation = gradient_accumulation_steps)."
        },
    )
    num_train_epochs: float = field(
        default=2.0, metadata={"help": "Passes over the training records (when max_steps is not set)."}
    )
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (overrides epochs)."})
    logging_steps: int = field(
        default=1, metadata={"help": "Log a metrics row every this many steps (and the last one)."}
    )
    save_steps: int = field(
        default=0, metadata={"help": "Save a resumable checkpoint every this many steps (0: none)."}
    )
    save_total_limit: int | None = field(
        default=2,
        metadata={
            "help": "Keep the newest this many checkpoints (0 or None: all). Unlike transformers, which keeps all "
            "by default, 2 here: a 7B checkpoint with optimizer state is ~90 GB."
        },
    )
    eval_steps: int = field(
        default=0,
        metadata={"help": "Evaluate val_annotations every this many steps and at step 0 (0: never)."},
    )
    eval_max_samples: int | None = field(
        default=None, metadata={"help": "Evaluate only the first N validation records."}
    )
    report_to: list[str] = field(
        default_factory=lambda: ["tensorboard"],
        metadata={"help": "Trackers: tensorboard, wandb, or none (metrics.jsonl is always written)."},
    )
    wandb_project: str | None = field(
        default=None, metadata={"help": "W&B project; default: $WANDB_PROJECT, else invert4tvg."}
    )
    wandb_entity: str | None = field(default=None, metadata={"help": "W&B entity; default: $WANDB_ENTITY."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Continue the run in output_dir: latest (its newest complete checkpoint) or a checkpoint "
            "directory (transformers' name; --resume_from_checkpoint latest)."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the run already in output_dir (its files only); without it a non-empty "
            "output_dir is refused unless --resume_from_checkpoint is given."
        },
    )
    fsdp: str = field(
        default="",
        metadata={
            "help": "full_shard: shard the policy and its reference over the processes with FSDP2, one group per "
            "decoder layer and vision block (transformers' name; docs/training.md, 'Sharded training'). Empty: "
            "every process holds the whole model (DDP)."
        },
    )

    @property
    def records_per_step(self) -> int:
        """Records (SFT examples, GRPO prompts) each device draws per step."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    def __post_init__(self) -> None:
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        self.report_to = [r for r in self.report_to if r != "none"]  # transformers' "none" = no tracker
        check_report_to(self.report_to)
        check_training_arguments(self)  # at parse time, before a model, data or output_dir is touched
        if self.fsdp not in ("", "full_shard"):
            raise ConfigError(
                f"fsdp: {self.fsdp!r} is not supported; use full_shard (FSDP2) or leave it empty (DDP)"
            )


@dataclass
class GRPOArguments(TrainingArguments):
    num_generations: int = field(
        default=8,
        metadata={"help": "G: completions sampled per prompt; advantages compare them within the group."},
    )
    max_completion_length: int = field(default=1024, metadata={"help": "Most new tokens per completion."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the rollouts."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling of the rollouts (1: off)."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling of the rollouts (0: off)."})
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
    rollout_backend: str = field(default="hf", metadata={"help": "hf | ray-hf | vllm | ray-vllm"})
    rollout_workers: int = field(
        default=1, metadata={"help": "Ray actors generating rollouts (ray-* backends)."}
    )
    rollout_batch_sequences: int = field(
        default=64, metadata={"help": "Most sequences one generate call batches together."}
    )
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
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs per vLLM engine."})
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


@dataclass
class SFTArguments(TrainingArguments):
    output_dir: str = field(default="runs/sft", metadata={"help": "Run directory of the warm start."})
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
    max_completion_length: int = field(
        default=256, metadata={"help": "Longest target, in tokens (and the longest answer in validation)."}
    )
    vision_pretrain_epochs: int = field(
        default=0,
        metadata={
            "help": "Stage 1 for a model whose vision tower starts random (the tiny model): epochs of clip-level "
            "recognition (the query's action verb and object) on the training clips before SFT, through "
            "get_video_features with read-outs that are dropped afterwards (docs/training.md). 0: no stage 1."
        },
    )
    vision_pretrain_learning_rate: float = field(
        default=1e-3,
        metadata={"help": "Stage 1's AdamW learning rate for the vision tower (read-outs: 10x)."},
    )
    vision_pretrain_batch_size: int = field(default=32, metadata={"help": "Clips per stage-1 step."})
    think_template: str = field(
        default="I look for when the event happens.",
        metadata={
            "help": "The <think> text of grounding targets ({query}, {start}, {end}, {duration} available)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.invert_sft_tasks) - set(INVERSION_TASKS))
        if unknown or (self.invert_sft_fraction > 0 and not self.invert_sft_tasks):
            raise ValueError(
                f"invert_sft_tasks must be a non-empty subset of vc, ar, vd; got {self.invert_sft_tasks}"
            )


def parse_config(
    types: tuple[type, ...], argv: list[str] | None = None, ignore_unknown: bool = False
) -> tuple[Any, ...]:
    """``--config file.yaml`` plus ``--field value`` overrides (the command line wins), TRL style; every field's
    type and range checked, unknown keys and flags refused with the closest field (``config_parser.py``).

    ``ignore_unknown`` passes over YAML keys of other dataclasses (reading a training config for its data and model
    settings only, as ``invert4tvg eval`` does)."""
    from invert4tvg.config_parser import parse

    return parse(types, argv, ignore_unknown)


def to_dict(*configs: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for config in configs:
        merged.update(dataclasses.asdict(config))
    return merged
