"""Code that runs inside vLLM's workers (``worker_extension_cls``): load new weights in place, in three calls.

vLLM mixes this class into its worker, so ``self.model_runner`` is the worker's model runner; ``LLM.collective_rpc``
calls a method on every worker (all tensor-parallel ranks). Imported only by vLLM; nothing here runs without it.

A weight sync is ``begin`` / ``load`` (once per bucket) / ``finish``, vLLM 0.32's in-place reload
(``model_executor/model_loader/reload``) split across calls:

- ``begin`` puts every layer in reload mode: its parameters return to their checkpoint layout and each layer
  buffers what it receives until all of its weights have arrived. A plain ``model.load_weights`` after start-up
  cannot work on CPU: the CPU backend repacks linear weights into its own kernels after loading and leaves
  ``layer.weight`` without a ``weight_loader``.
- ``load`` hands one bucket to the model's own ``load_weights`` (checkpoint names, remapped by the model's
  ``hf_to_vllm_mapper``, sharded and fused into q/k/v and gate/up as at start-up). A layer is processed into
  kernel form as soon as its last weight arrives, whichever bucket brings it, so a bucket boundary inside a layer
  never serves a half-loaded layer.
- ``finish`` processes what is left, puts back the layers that received nothing (a frozen vision tower), and
  re-processes a tied ``lm_head``: it shares the embedding's parameter but keeps a kernel copy of its own
  (on CPU, ``dispatch_cpu_unquantized_gemm``), which would otherwise keep scoring with the old embedding. Then the
  caches computed by the old weights (encoder outputs, multimodal inputs) are dropped.

Across processes (vLLM's default ``VLLM_ENABLE_V1_MULTIPROCESSING=1``) the arguments of ``collective_rpc`` are
msgpack-encoded without type information and a tensor arrives as a list ``[dtype, shape, buffer index]`` whose
buffer is gone, so a bucket travels as one byte string plus an index ``[name, dtype, shape, offset, nbytes]``
(``vllm_engine.wire_buckets``). In the trainer's process (multiprocessing off: the colocated engine) tensors are
passed as they are, on their device.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from invert4tvg.rollout.weights import PackedWeights, unpack_weights

logger = logging.getLogger(__name__)


def decode_wire_chunk(
    index: Sequence[Sequence[Any]], data: bytes | bytearray | memoryview
) -> dict[str, torch.Tensor]:
    """The tensors of one bucket (views of ``data``, no copy)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(
            f"invert4tvg_load_weights expects the packed bytes of vllm_engine.wire_buckets, got {type(data).__name__} "
            "(tensors do not survive vLLM's msgpack serialisation between processes)"
        )
    entries = [
        (str(name), str(dtype), tuple(int(d) for d in shape), int(start), int(n))
        for name, dtype, shape, start, n in index
    ]
    return unpack_weights(PackedWeights(np.frombuffer(data, dtype=np.uint8), entries))


class WeightLoaderExtension:
    model_runner: Any  # provided by the vLLM worker this class is mixed into

    def invert4tvg_begin_weights(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        model = self.model_runner.get_model()
        self._invert4tvg_tied = _tied_heads(model)  # before reload mode swaps the parameters out
        initialize_layerwise_reload(model)

    def invert4tvg_load_weights(self, index: list[list[Any]], data: bytes) -> int:
        """Load one packed bucket (across processes); returns how many tensors it loaded (the engine checks it)."""
        return self._load(decode_wire_chunk(index, data).items())

    def invert4tvg_load_tensors(self, weights: list[tuple[str, torch.Tensor]]) -> int:
        """Load one bucket of tensors passed by reference (the engine lives in this process)."""
        return self._load(weights)

    def invert4tvg_finish_weights(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        runner = self.model_runner
        model = runner.get_model()
        finalize_layerwise_reload(model, runner.vllm_config.model_config)
        for head in getattr(self, "_invert4tvg_tied", []):
            head.quant_method.process_weights_after_loading(head)
        runner.reset_encoder_cache()
        runner.reset_mm_cache()

    def _load(self, weights: Iterable[tuple[str, torch.Tensor]]) -> int:
        model = self.model_runner.get_model()
        device = self.model_runner.device  # not the parameters': in reload mode they wait on the meta device
        count = 0

        def counted():
            nonlocal count
            for name, tensor in weights:
                count += 1
                yield name, tensor.to(device, non_blocking=True)

        model.load_weights(weights=counted())
        return count


def _tied_heads(model: torch.nn.Module) -> list[torch.nn.Module]:
    """``lm_head`` modules whose weight is an embedding's (``tie_word_embeddings``)."""
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding

    embeddings = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, VocabParallelEmbedding) and not isinstance(m, ParallelLMHead)
    }
    return [m for m in model.modules() if isinstance(m, ParallelLMHead) and id(m.weight) in embeddings]
