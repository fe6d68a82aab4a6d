"""``ModelArguments``: the model, its grounding head, precision, LoRA; TRL's ``ModelConfig`` names."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelArguments:
    # Parameters that control the model
    model_name_or_path: str = field(
        default="Qwen/Qwen2.5-VL-3B-Instruct",
        metadata={"help": "Hub id or local directory (save_pretrained layout)."},
    )

    # Parameters that control the grounding head (docs/heads.md); None: saved with the model, else the default
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

    # Parameters that control precision and attention
    dtype: str = field(
        default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU), bfloat16, float32."}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "e.g. sdpa, flash_attention_2."})

    # Parameters that control LoRA (TRL's ModelConfig names)
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

    # Parameters that control what trains and its memory
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Time-R1 freezes the vision encoder."})
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in backward: less memory, about 30 percent slower."},
    )
