"""A head's own trainable modules (VideoExpert's temporal head, MeCo's projectors) live on the model.

They are attached as the submodule ``invert4tvg_head`` of the transformers model (inside a peft wrapper), so the
optimizer, accelerate's device placement, DDP's gradient all-reduce and weight sync see them like any other
parameter. They are *not* part of ``save_pretrained``'s files: a plain Qwen2.5-VL loading those would warn about
unknown keys, and peft would drop them. They are saved beside the model as ``invert4tvg_head.safetensors`` and
loaded from there (never unpickled).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

ATTRIBUTE = "invert4tvg_head"
FILE = "invert4tvg_head.safetensors"


def _owner(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under DDP and peft wrappers (where the head is attached)."""
    model = getattr(model, "module", model)  # DDP
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def attach(model: torch.nn.Module, module: torch.nn.Module) -> None:
    """Attach ``module`` to ``model`` (replacing a previous head), on the device of the model's parameters."""
    device = next(model.parameters()).device
    _owner(model).add_module(ATTRIBUTE, module.to(device))


def get(model: torch.nn.Module) -> torch.nn.Module | None:
    return getattr(_owner(model), ATTRIBUTE, None)


@contextmanager
def detached(model: torch.nn.Module) -> Iterator[torch.nn.Module | None]:
    """Within the block the model has no head submodule (``save_pretrained`` / ``load_state_dict`` of the model's
    own weights); it is put back afterwards, the same object, so optimizer references stay valid."""
    owner = _owner(model)
    module = owner._modules.pop(ATTRIBUTE, None)
    try:
        yield module
    finally:
        if module is not None:
            owner.add_module(ATTRIBUTE, module)


def save(model: torch.nn.Module, directory: str | Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """Write the head's weights beside a saved model (nothing for heads without modules). ``state``: the module's
    whole weights where the model is sharded (from :func:`split_state_dict`), written in place of its own."""
    from safetensors.torch import save_file

    module = get(model)
    if module is not None:
        state = module.state_dict() if state is None else state
        state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        save_file(state, str(Path(directory) / FILE))


def split_state_dict(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A whole model's state dict (a sharded model's, gathered) as (the model's own weights, the head module's
    weights named as in the module)."""
    marker = f"{ATTRIBUTE}."
    own = {k: v for k, v in state.items() if marker not in k}
    head = {k.split(marker, 1)[1]: v for k, v in state.items() if marker in k}
    return own, head


def load(model: torch.nn.Module, directory: str | Path) -> bool:
    """Load the head's weights saved beside a model into the attached head; False when there is no file.

    A file whose names or shapes do not match the head fails with the file named (a model saved with other head
    options, e.g. another ``head_width``)."""
    from safetensors.torch import load_file

    module, file = get(model), Path(directory) / FILE
    if module is None or not file.is_file():
        return False
    state = load_file(str(file))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{file} does not fit the {type(module).__name__} built from the head options: "
            f"{str(err).splitlines()[0]} ... Build the head with the options the model was saved with "
            "(invert4tvg_head.json beside it)."
        ) from None
    return True
