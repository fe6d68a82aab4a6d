"""Configuration: flat YAML files with command-line overrides, parsed by TRL's ``TrlParser``.

Field names follow TRL (``GRPOConfig``: ``num_generations``, ``beta``, ``epsilon``, ``loss_type``, ...) and TRL's
``ModelConfig`` (``model_name_or_path``, ``use_peft``, ``lora_r``, ...), so a TRL user can read a config here
without a glossary. Only fields this project honours exist: an unknown key in a YAML file is an error.

One dataclass per concern, each in its own module and grouped inside under "Parameters that control ..." headings as
TRL's ``GRPOConfig`` is: ``ModelArguments``, ``DataArguments`` and ``TaskArguments``, ``TrainingArguments`` (shared
by both trainers), ``GRPOArguments`` and ``SFTArguments``. A recipe parses several of them at once, so users see one
flat set of flags and YAML keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from invert4tvg.config.data_arguments import DataArguments, TaskArguments
from invert4tvg.config.grpo_arguments import GRPOArguments
from invert4tvg.config.model_arguments import ModelArguments
from invert4tvg.config.sft_arguments import SFTArguments
from invert4tvg.config.training_arguments import TrainingArguments
from invert4tvg.config_parser import parse

__all__ = [
    "DataArguments",
    "GRPOArguments",
    "ModelArguments",
    "SFTArguments",
    "TaskArguments",
    "TrainingArguments",
    "parse_config",
    "to_dict",
]


def parse_config(
    types: tuple[type, ...], argv: list[str] | None = None, ignore_unknown: bool = False
) -> tuple[Any, ...]:
    """``--config file.yaml`` plus ``--field value`` overrides (the command line wins), TRL style; every field's
    type and range checked, unknown keys and flags refused with the closest field (``config_parser.py``).

    ``ignore_unknown`` passes over YAML keys of other dataclasses (reading a training config for its data and model
    settings only, as ``invert4tvg eval`` does)."""
    return parse(types, argv, ignore_unknown)


def to_dict(*configs: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for config in configs:
        merged.update(dataclasses.asdict(config))
    return merged
