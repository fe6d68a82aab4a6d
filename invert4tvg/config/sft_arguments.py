"""``SFTArguments``: the supervised warm start (``recipes/sft_warmstart.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from invert4tvg.config.training_arguments import TrainingArguments
from rewards.base import INVERSION_TASKS


@dataclass
class SFTArguments(TrainingArguments):
    # Parameters that control the run
    output_dir: str = field(default="runs/sft", metadata={"help": "Run directory of the warm start."})

    # Parameters that control the examples: grounding answers and Invert-SFT
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

    # Parameters that control stage 1, for a model whose vision tower starts random (the tiny model)
    vision_pretrain_epochs: int = field(
        default=0,
        metadata={
            "help": "Epochs of clip-level action recognition (the query's action verb, read out from every video "
            "token) on the training clips before SFT, through get_video_features with a read-out that is dropped "
            "afterwards (docs/training.md). 0: no stage 1 (a pretrained VLM's tower needs none)."
        },
    )
    vision_pretrain_learning_rate: float = field(
        default=1e-3,
        metadata={"help": "Stage 1's AdamW learning rate for the vision tower (the read-out: 10x)."},
    )
    vision_pretrain_batch_size: int = field(default=32, metadata={"help": "Clips per stage-1 step."})

    # Parameters that control the targets
    max_completion_length: int = field(
        default=256, metadata={"help": "Longest target, in tokens (and the longest answer in validation)."}
    )
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
