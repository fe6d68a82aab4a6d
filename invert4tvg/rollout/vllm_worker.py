"""Code that runs inside vLLM's GPU worker processes (``worker_extension_cls``): load weights in place.

vLLM mixes this class into its worker, so ``self.model_runner.model`` is the served model; ``LLM.collective_rpc``
calls the method on every worker (all tensor-parallel ranks). The model's own ``load_weights`` takes checkpoint
names (the transformers layout, remapped by the model's ``hf_to_vllm_mapper``) and shards and fuses them
(q/k/v, gate/up) the way checkpoint loading does. Imported only by vLLM; nothing here runs without it.

The weights arrive as ``VLLMEngine`` sends them (``vllm_engine.wire_chunks``): an index of
``[name, dtype, shape, offset, nbytes]`` and one byte string. Tensors cannot be sent as such: with vLLM's default
``VLLM_ENABLE_V1_MULTIPROCESSING=1`` the arguments are msgpack-encoded without type information and a tensor
arrives as a list ``[dtype, shape, buffer index]`` whose buffer is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from invert4tvg.rollout.weights import PackedWeights, unpack_weights


def decode_wire_chunk(
    index: Sequence[Sequence[Any]], data: bytes | bytearray | memoryview
) -> dict[str, torch.Tensor]:
    """The tensors of one chunk (views of ``data``, no copy)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(
            f"invert4tvg_load_weights expects the packed bytes of vllm_engine.wire_chunks, got {type(data).__name__} "
            "(tensors do not survive vLLM's msgpack serialisation between processes)"
        )
    entries = [
        (str(name), str(dtype), tuple(int(d) for d in shape), int(start), int(n))
        for name, dtype, shape, start, n in index
    ]
    return unpack_weights(PackedWeights(np.frombuffer(data, dtype=np.uint8), entries))


class WeightLoaderExtension:
    model_runner: object  # provided by the vLLM worker this class is mixed into

    def invert4tvg_load_weights(self, index: list[list[Any]], data: bytes) -> int:
        """Load one chunk into the served model; returns how many tensors it loaded (the engine checks it)."""
        model = self.model_runner.model  # type: ignore[attr-defined]
        device = next(model.parameters()).device
        tensors = decode_wire_chunk(index, data)
        model.load_weights(weights=((name, tensor.to(device)) for name, tensor in tensors.items()))
        return len(tensors)
