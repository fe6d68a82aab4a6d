"""Load a Qwen2.5-VL (hub id or local directory, tiny or real) into a policy: dtype, attention, LoRA, frozen vision
tower, gradient checkpointing. The same code loads ``Qwen/Qwen2.5-VL-7B-Instruct`` and the offline tiny model."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from invert4tvg.config import ModelArguments
from invert4tvg.policy.base import Policy

logger = logging.getLogger(__name__)

HEADS = {"text_timestamps": "invert4tvg.policy.text_timestamps:TextTimestampPolicy"}


def resolve_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, name)


def _head_class(name: str) -> type[Policy]:
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; available: {sorted(HEADS)}")
    module, _, cls = HEADS[name].partition(":")
    import importlib

    return getattr(importlib.import_module(module), cls)


def load_policy(args: ModelArguments, for_training: bool = True) -> Policy:
    """Model + processor + head. A directory holding a LoRA adapter (``adapter_config.json``) is loaded onto its
    base model; with ``use_peft`` a new adapter is added for training."""
    path = args.model_name_or_path
    dtype = resolve_dtype(args.dtype)
    kwargs = {"dtype": dtype}
    if args.attn_implementation:
        kwargs["attn_implementation"] = args.attn_implementation
    adapter = Path(path) / "adapter_config.json"
    if adapter.exists():
        from peft import PeftConfig, PeftModel

        base = PeftConfig.from_pretrained(path).base_model_name_or_path
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, **kwargs)
        model = PeftModel.from_pretrained(model, path, is_trainable=for_training and args.use_peft)
        if not args.use_peft:
            model = model.merge_and_unload()
    else:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, **kwargs)
    processor = AutoProcessor.from_pretrained(path)
    if for_training:
        model = prepare_for_training(model, args)
    else:
        model.eval().requires_grad_(False)
    policy = _head_class(args.head)(model, processor)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    logger.info("loaded %s (%s, %.2fM params, %.2fM trainable)", path, dtype, n_all / 1e6, n_train / 1e6)
    return policy


def prepare_for_training(model: torch.nn.Module, args: ModelArguments) -> torch.nn.Module:
    if args.freeze_vision_tower:
        vision = _vision_tower(model)
        vision.requires_grad_(False)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if args.use_peft and not hasattr(model, "peft_config"):
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            # Only language-model projections: the names also occur in the vision tower's blocks.
            target_modules=rf"^(?!.*visual).*\.({'|'.join(args.lora_target_modules)})$",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    return model


def _vision_tower(model: torch.nn.Module) -> torch.nn.Module:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.model.visual
