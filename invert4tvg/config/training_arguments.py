"""``TrainingArguments``: what GRPO and SFT share (the run, the optimizer, the batch, logging, checkpoints,
sharding); transformers' ``TrainingArguments`` names."""

from __future__ import annotations

from dataclasses import dataclass, field

from invert4tvg.config_checks import ConfigError, check_report_to, check_training_arguments


@dataclass
class TrainingArguments:
    """Optimisation, schedule, logging and checkpointing, shared by GRPO and SFT."""

    # Parameters that control the run
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

    # Parameters that control the optimizer and its schedule
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

    # Parameters that control the batch and the length of training
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

    # Parameters that control logging, checkpoints and evaluation
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

    # Parameters that control the trackers
    report_to: list[str] = field(
        default_factory=lambda: ["tensorboard"],
        metadata={"help": "Trackers: tensorboard, wandb, or none (metrics.jsonl is always written)."},
    )
    wandb_project: str | None = field(
        default=None, metadata={"help": "W&B project; default: $WANDB_PROJECT, else invert4tvg."}
    )
    wandb_entity: str | None = field(default=None, metadata={"help": "W&B entity; default: $WANDB_ENTITY."})

    # Parameters that control an existing run in output_dir
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

    # Parameters that control sharding
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
