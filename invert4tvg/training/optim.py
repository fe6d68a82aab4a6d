"""AdamW and the learning-rate schedule from the training arguments (TRL / transformers names)."""

from __future__ import annotations

import math

import torch
from transformers import get_scheduler

from invert4tvg.config import TrainingArguments


def build_optimizer(
    model: torch.nn.Module, args: TrainingArguments, total_steps: int, updates_per_step: int = 1
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: check use_peft / freeze_vision_tower")
    optimizer = torch.optim.AdamW(
        params,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.weight_decay,
    )
    num_updates = total_steps * updates_per_step
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=math.ceil(args.warmup_ratio * num_updates),
        num_training_steps=num_updates,
    )
    return optimizer, scheduler
