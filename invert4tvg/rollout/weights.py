"""Weight-sync payloads: what a rollout worker needs to serve the trainer's current policy.

The trainer sends ``Policy.weights_for_sync()``: its trainable parameters only (the LoRA adapters when training
with LoRA, the language model when the vision tower is frozen). A worker built from the same checkpoint and
configuration plus the latest payload serves exactly the trainer's weights; :class:`WeightLog` remembers which
payloads a freshly (re)started worker must replay.

vLLM serves merged weights, not peft adapters, so for LoRA runs the vLLM engine merges the received adapters into
the base weights it read from the checkpoint (:func:`merge_lora`): only adapter tensors travel.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import torch

H = TypeVar("H")
#: What a weight sync takes: a mapping, or any iterator of ``(name, tensor)`` pairs consumed once (the trainer's
#: parameters where they live, or full tensors gathered from FSDP2 shards one at a time).
WeightSource = Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]

PEFT_PREFIX = "base_model.model."
_ALIGN = 64
_LORA_PARAM = re.compile(r"^(?P<module>.+)\.lora_(?P<kind>[AB])\.(?P<adapter>[^.]+)\.weight$")
# Checkpoints saved before transformers 4.52 (the released Qwen2.5-VL ones) use the old top-level names.
_LEGACY_PREFIXES = (("model.language_model.", "model."), ("model.visual.", "visual."))
# Checkpoint tensors that vLLM fuses into one layer (q/k/v into qkv_proj, gate/up into gate_up_proj).
_FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
_FUSED_PART = re.compile(
    r"^(?P<module>.+)\.(?P<part>q_proj|k_proj|v_proj|gate_proj|up_proj)\.(?P<kind>weight|bias)$"
)


def payload_nbytes(weights: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in weights.values())


@dataclass
class PackedWeights:
    """Tensors laid out in one byte buffer. Ray stores numpy arrays out of band and maps them read-only into
    every worker, where pickled tensors would be serialised and copied per worker (about 4x slower here,
    benchmarks/rollout.py)."""

    buffer: np.ndarray  # uint8
    index: list[tuple[str, str, tuple[int, ...], int, int]]  # name, dtype, shape, offset, nbytes

    def __len__(self) -> int:
        return len(self.index)


def pack_weights(weights: Mapping[str, torch.Tensor]) -> PackedWeights:
    index, offset = [], 0
    for name, tensor in weights.items():
        nbytes = tensor.numel() * tensor.element_size()
        index.append((name, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape), offset, nbytes))
        offset += -(-nbytes // _ALIGN) * _ALIGN  # aligned starts: a dtype view needs offset % itemsize == 0
    buffer = np.empty(offset, dtype=np.uint8)
    for (_, _, _, start, nbytes), tensor in zip(index, weights.values()):
        if nbytes:  # a numpy memcpy: torch's multi-threaded copy stalls when another process holds a core
            raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            buffer[start : start + nbytes] = raw.numpy()
    return PackedWeights(buffer, index)


def unpack_weights(packed: PackedWeights) -> dict[str, torch.Tensor]:
    """Tensors viewing the packed buffer (no copy); loading them into a model copies them."""
    with warnings.catch_warnings():  # the object store's buffer is read-only; these views are only read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        flat = torch.from_numpy(packed.buffer)
    return {
        name: flat[start : start + nbytes].view(getattr(torch, dtype)).reshape(shape)
        for name, dtype, shape, start, nbytes in packed.index
    }


class WeightLog(Generic[H]):
    """The weight updates a new worker replays, in order, to reach the current policy.

    Every payload is a complete set of trainable parameters in practice, so the log usually holds one entry; a
    partial update (a subset of the names seen so far) is appended instead of replacing what it does not cover.
    ``H`` is whatever handle the caller keeps (a Ray object reference, a dict).
    """

    def __init__(self) -> None:
        self._entries: list[H] = []
        self._names: set[str] = set()

    def add(self, handle: H, names: Iterable[str]) -> None:
        names = set(names)
        if names >= self._names:
            self._entries = [handle]
        else:
            self._entries.append(handle)
        self._names |= names

    def handles(self) -> list[H]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def is_lora_payload(names: Iterable[str]) -> bool:
    return any(_LORA_PARAM.match(name) for name in names)


def checkpoint_name(peft_name: str) -> str:
    """The checkpoint name of a (possibly peft-wrapped) parameter: ``base_model.model.`` and ``.base_layer``
    removed."""
    return peft_name.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")


def lora_base_names(names: Iterable[str]) -> list[str]:
    """Checkpoint names of the base weights that the LoRA parameters in ``names`` modify."""
    modules = {m["module"] for m in map(_LORA_PARAM.match, names) if m}
    return sorted(checkpoint_name(module) + ".weight" for module in modules)


def merge_lora(
    base: Mapping[str, torch.Tensor], trainable: Mapping[str, torch.Tensor], scaling: float
) -> dict[str, torch.Tensor]:
    """Full weights (checkpoint names) from base weights and a LoRA payload: ``W + scaling * B @ A`` for every
    adapted module; other trainable tensors in the payload pass through under their checkpoint names.

    ``scaling`` is peft's ``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with rsLoRA). One adapter per module.
    """
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    merged: dict[str, torch.Tensor] = {}
    for name, tensor in trainable.items():
        match = _LORA_PARAM.match(name)
        if match:
            pairs.setdefault(match["module"], {})[match["kind"]] = tensor
        else:
            merged[checkpoint_name(name)] = tensor
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"LoRA payload for {module} lacks lora_{'B' if 'A' in ab else 'A'}")
        key = checkpoint_name(module) + ".weight"
        if key not in base:
            raise KeyError(f"no base weight {key} for the LoRA adapter on {module}")
        weight = base[key]
        delta = ab["B"].to(torch.float32) @ ab["A"].to(torch.float32)
        merged[key] = (weight.to(torch.float32) + scaling * delta.to(weight.device)).to(weight.dtype)
    return merged


def fused_siblings(names: Iterable[str]) -> list[str]:
    """Every checkpoint name of the fused layers that ``names`` touch (``names`` included): a layer that vLLM
    fuses must receive all of its parts in one sync, or its other parts would be served uninitialised."""
    out: set[str] = set()
    for name in names:
        match = _FUSED_PART.match(name)
        if match is None:
            continue
        group = next(g for g in _FUSED if match["part"] in g)
        out.update(f"{match['module']}.{part}.{match['kind']}" for part in group)
    return sorted(out)


def checkpoint_numel(model: str) -> int:
    """The number of parameters stored in a safetensors checkpoint, from the file headers (no tensor is read)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(checkpoint_dir(model).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (a safetensors handle is not iterable)
                total += int(np.prod(handle.get_slice(name).get_shape()))
    return total


def checkpoint_dir(model: str) -> Path:
    """A local directory holding the checkpoint's safetensors (a hub id resolves to its local snapshot)."""
    path = Path(model)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, allow_patterns=["*.safetensors", "*.json"]))


def read_checkpoint_tensors(model: str, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """The tensors ``names`` (current transformers names) from a safetensors checkpoint, read lazily file by
    file; names saved under the pre-4.52 layout are found too."""
    from safetensors import safe_open

    directory = checkpoint_dir(model)
    wanted = {name: _aliases(name) for name in names}
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
    else:
        weight_map = {}
        for file in sorted(directory.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as handle:
                weight_map.update(dict.fromkeys(handle.keys(), file.name))
    by_file: dict[str, list[tuple[str, str]]] = {}
    missing = []
    for name, aliases in wanted.items():
        stored = next((a for a in aliases if a in weight_map), None)
        if stored is None:
            missing.append(name)
        else:
            by_file.setdefault(weight_map[stored], []).append((name, stored))
    if missing:
        raise KeyError(f"{len(missing)} tensors not in the checkpoint {directory}: {missing[:5]}")
    out: dict[str, torch.Tensor] = {}
    for file, entries in by_file.items():
        with safe_open(str(directory / file), framework="pt") as handle:
            for name, stored in entries:
                out[name] = handle.get_tensor(stored)
    return out


def _aliases(name: str) -> list[str]:
    names = [name]
    for new, old in _LEGACY_PREFIXES:
        if name.startswith(new):
            names.append(old + name[len(new) :])
    return names
