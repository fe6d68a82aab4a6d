"""Weights and optimizer state of a sharded (FSDP2) run: written and read shard by shard with
``torch.distributed.checkpoint`` (DCP), and consolidated into one full state dict for ``final/``.

A checkpoint of a sharded run keeps the layout of :mod:`invert4tvg.training.checkpoint` (written to a temporary
directory, manifest last, renamed when complete), with ``sharded/`` (DCP: every process writes its own shards of the
weights and AdamW moments, so no process ever holds the whole optimizer state) in place of ``model/*.safetensors``
and ``optimizer.pt``; ``model/`` keeps the config and processor. A resume reads the shards back into the same world
size bit for bit. All processes must reach a shared filesystem (one node, or a network filesystem).

DCP stores its ``.metadata`` with pickle; it is read here with an unpickler that admits only DCP's own metadata
classes and plain values, so a crafted checkpoint cannot run code on ``--resume_from_checkpoint`` (the tensor files
themselves are read with ``torch.load(weights_only=True)`` by DCP).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

SHARDED_DIR = "sharded"

# What DCP's metadata pickle may hold: its dataclasses, torch sizes and dtypes, and plain containers.
_ALLOWED_MODULES = (
    "torch.distributed.checkpoint.metadata",
    "torch.distributed.checkpoint.filesystem",
    "torch.distributed.checkpoint.planner",
    "torch.distributed.checkpoint._extension",
)
_ALLOWED = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # a layout from its name (torch.strided)
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(_ALLOWED_MODULES) or (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint's metadata")


def _reader(path: Path):
    from torch.distributed.checkpoint import FileSystemReader

    class SafeReader(FileSystemReader):
        """DCP's file reader with the metadata unpickled by :class:`_MetadataUnpickler`."""

        def read_metadata(self, *args: Any, **kwargs: Any):
            from torch.distributed.checkpoint.metadata import StorageMeta

            rank = kwargs.get("rank")
            with open(self._get_metadata_path(rank), "rb") as handle:
                metadata = _MetadataUnpickler(io.BytesIO(handle.read())).load()
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(path)


def save_state(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every process writes its shards of the weights and of the optimizer state to ``directory/sharded``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.save(state, checkpoint_id=Path(directory) / SHARDED_DIR)


def load_state(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Read ``directory/sharded`` back into the sharded ``model`` and its ``optimizer`` (every process). A metadata
    file holding anything but DCP's own classes raises ``pickle.UnpicklingError``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.load(state, storage_reader=_reader(Path(directory) / SHARDED_DIR))
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optimizer"])


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on CPU in the stored dtypes (fp32 master weights), on the main process only (empty on
    the others); every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    # A tied weight (the 3B model's LM head is its embedding) is gathered under both names; keep the first, as
    # save_pretrained of an unsharded model does.
    kept = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
    tied = {name for name, _ in model.named_parameters(remove_duplicate=False)} - kept
    return {name: tensor for name, tensor in state.items() if name not in tied}
