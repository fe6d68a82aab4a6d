"""A saved model directory, written and read in one place: the model in ``save_pretrained`` layout (safetensors;
only the adapters with LoRA), the processor, the head's own module weights (``head_modules.FILE``) and the head's
record (:data:`HEAD_FILE`), so that loading it needs no head option. ``final/`` and every checkpoint's ``model/``
are such directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from invert4tvg.policy import head_modules

# Which head decodes the model, with its options (``Policy.head_config()``).
HEAD_FILE = "invert4tvg_head.json"


def save(
    model: torch.nn.Module,
    processor: Any,
    directory: str | Path,
    head_config: dict[str, Any] | None = None,
    state_dict: dict[str, Any] | None = None,
    weights: bool = True,
) -> None:
    """Write ``model`` (unwrapped), ``processor``, the head module's weights and the head's record to
    ``directory``. ``state_dict``: the whole weights of a sharded model, written in its place; ``weights=False``
    writes the model's config only (a sharded checkpoint keeps the weights in its shards)."""
    directory = Path(directory)
    if weights:
        head_state = None
        # The head module's weights go to their own file, as an unsharded save does.
        if state_dict is not None:
            state_dict, head_state = head_modules.split_state_dict(state_dict)
        with head_modules.detached(model):
            model.save_pretrained(directory, safe_serialization=True, state_dict=state_dict)
        head_modules.save(model, directory, head_state)
    else:
        model.config.save_pretrained(directory)
    processor.save_pretrained(directory)
    if head_config is not None:
        (directory / HEAD_FILE).write_text(json.dumps(head_config, indent=1) + "\n")


def load_weights(model: torch.nn.Module, directory: str | Path) -> None:
    """Load a saved model directory into an existing (possibly LoRA-wrapped) model, head module included.

    Full weights go through ``from_pretrained``, which knows the on-disk key layout of each transformers version,
    and are then copied in place, so optimizer and accelerate references to the parameters stay valid.
    """
    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    directory = Path(directory)
    if head_modules.get(model) is not None and not head_modules.load(model, directory):
        raise FileNotFoundError(
            f"{directory} lacks {head_modules.FILE}, the weights of the head's own module"
        )
    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_file(directory / "adapter_model.safetensors"))
        return
    with head_modules.detached(model):
        _load_full_weights(model, directory)


def _load_full_weights(model: torch.nn.Module, directory: Path) -> None:
    # fp32 when any weight is fp32 (the trained weights, see policy.loading.upcast_trainable): loading them in
    # the dtype of whichever parameter comes first (a bf16 vision tower) would round the master weights.
    dtypes = {p.dtype for p in model.parameters()}
    dtype = torch.float32 if torch.float32 in dtypes else next(model.parameters()).dtype
    saved = type(model).from_pretrained(directory, dtype=dtype, use_safetensors=True)  # never a pickled .bin
    model.load_state_dict(saved.state_dict(), strict=True)
