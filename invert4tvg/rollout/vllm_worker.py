"""Code that runs inside vLLM's GPU worker processes (``worker_extension_cls``): load weights in place.

vLLM mixes this class into its worker, so ``self.model_runner.model`` is the served model; ``LLM.collective_rpc``
calls the method on every worker (all tensor-parallel ranks). The model's own ``load_weights`` takes checkpoint
names (the transformers layout, remapped by the model's ``hf_to_vllm_mapper``) and shards and fuses them
(q/k/v, gate/up) the way checkpoint loading does. Imported only by vLLM; nothing here runs without it.
"""

from __future__ import annotations

import torch


class WeightLoaderExtension:
    model_runner: object  # provided by the vLLM worker this class is mixed into

    def invert4tvg_load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> int:
        model = self.model_runner.model  # type: ignore[attr-defined]
        device = next(model.parameters()).device
        model.load_weights(weights=((name, tensor.to(device)) for name, tensor in weights))
        return len(weights)
