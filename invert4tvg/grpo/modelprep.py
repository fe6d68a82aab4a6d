"""What the GRPO trainer does to the models before training: dropout off, the reference model, and checks that the
weights are where and in the precision they must be."""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Mapping

import torch

from invert4tvg.training import fsdp

logger = logging.getLogger(__name__)

REF_ADAPTER = "ref"


def disable_dropout(model: torch.nn.Module) -> None:
    """TRL's ``disable_dropout``: with dropout the old-policy, reference and current passes of the same weights
    disagree, which biases the importance ratio and the KL."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def _adapter_is_trained(model: torch.nn.Module, sharded: bool = False) -> bool:
    """A fresh LoRA adapter has ``lora_B = 0`` (disabling it gives the same model); a loaded one does not. In a
    sharded run the main process decides (the others hold no weights yet) and tells the others."""
    if sharded:
        decision = [_adapter_is_trained(model) if torch.distributed.get_rank() == 0 else None]
        torch.distributed.broadcast_object_list(decision, src=0)
        return bool(decision[0])
    return any(
        "lora_B" in name and ".default." in name and bool(p.detach().abs().sum() > 0)
        for name, p in model.named_parameters()
    )


def build_reference(model: torch.nn.Module, accelerator, sharded: bool = False) -> torch.nn.Module | None:
    """The frozen reference the KL term pulls towards: the model as training starts.

    - full fine-tuning: a frozen copy in eval mode, on ``accelerator.device``, computing exactly as the policy does:
      the same parameter and buffer dtypes and the same autocast placement (``prepare_model`` patches its forward as
      ``prepare`` patches the policy's, so the LM head applied outside the forward runs in the same precision). A
      bf16 copy is not the policy: the rotary ``inv_freq`` in bf16 turns positions by up to 2.3 rad at position 2000
      for Qwen2.5-VL, and bf16 norms and residuals alone move log-probs by about 3e-3 on the tiny model, so the KL
      would pull away from the starting point instead of towards it. Under FSDP2 (``sharded``) the copy is only a
      skeleton on the meta device (:func:`invert4tvg.training.fsdp.meta_copy`), which the trainer shards and fills
      from the policy's own shards once the policy is sharded (:func:`invert4tvg.training.fsdp.shard_reference`);
    - a new LoRA adapter: None (the reference is the base model, adapters disabled: no copy);
    - a trained LoRA adapter (e.g. an SFT warm start): None, and a frozen copy of the adapter is added to ``model``
      under the name ``"ref"``, as TRL does; disabling the adapter would give the model before SFT instead.
    """
    if _is_peft(model):
        if _adapter_is_trained(model, sharded):
            model.add_adapter(REF_ADAPTER, model.peft_config["default"])
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, param in params.items():
                    if ".default." in name:
                        ref = params[name.replace(".default.", f".{REF_ADAPTER}.")]
                        # On the meta device (a sharded run's other processes) the main process's copy arrives
                        # when the model is sharded.
                        if not param.is_meta:
                            ref.copy_(param)
                        ref.requires_grad_(False)
            model.set_adapter("default")  # the trained adapter stays the active, trainable one
        return None
    if sharded:
        return fsdp.meta_copy(model)
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return accelerator.prepare_model(ref, evaluation_mode=True)  # device + autocast, never a DDP wrapper


@contextlib.contextmanager
def reference_context(model: torch.nn.Module, ref_model: torch.nn.Module | None) -> Iterator[None]:
    """Within this context, forward passes of ``model`` are those of the reference (for the LoRA cases of
    :func:`build_reference`; with a separate ``ref_model`` nothing changes)."""
    if ref_model is not None or not _is_peft(model):
        yield
    elif REF_ADAPTER in model.peft_config:
        model.set_adapter(REF_ADAPTER, inference_mode=True)
        try:
            yield
        finally:
            model.set_adapter("default")
    else:
        with model.disable_adapter():
            yield


def drop_reference_adapter(model: torch.nn.Module) -> None:
    """Remove the ``"ref"`` adapter so the final ``save_pretrained`` holds only the trained adapter."""
    if _is_peft(model) and REF_ADAPTER in model.peft_config:
        model.delete_adapter(REF_ADAPTER)


def check_master_weights(model: torch.nn.Module) -> None:
    """Refuse to train half-precision weights in place (updates below their rounding step are lost)."""
    half = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16)
    ]
    if half:
        raise ValueError(
            f"{len(half)} trainable parameters are stored in half precision (e.g. {half[0]}): AdamW updates smaller "
            "than their rounding step would be lost. Load the model with invert4tvg.policy.loading.load_policy "
            "(which keeps trainable weights in fp32) or call upcast_trainable(model), and compute in bf16 with "
            "Accelerator(mixed_precision='bf16')."
        )


def check_devices(device: torch.device, modules: Mapping[str, torch.nn.Module | None]) -> None:
    """Every parameter and buffer of every module the trainer runs must be on ``device``."""
    wrong = []
    for label, module in modules.items():
        if module is None:
            continue
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.device.type != device.type or (
                device.index is not None and tensor.device.index not in (None, device.index)
            ):
                wrong.append(f"{label}.{name} on {tensor.device}")
                break
    if wrong:
        raise RuntimeError(f"modules not on the training device {device}: {', '.join(wrong)}")
