"""Load a Qwen2.5-VL (hub id or local directory, tiny or real) into a policy: dtype, attention, LoRA, frozen vision
tower, gradient checkpointing. The same code loads ``Qwen/Qwen2.5-VL-7B-Instruct`` and the offline tiny model."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from invert4tvg.errors import UserError
from invert4tvg.modeling.positions import use_pretraining_positions
from invert4tvg.policy import head_modules
from invert4tvg.policy.base import Policy
from invert4tvg.policy.model_dir import HEAD_FILE

# Only for annotations: config pulls in the NLP stack, which benchmarks/gpu_smoke.py must run without.
if TYPE_CHECKING:
    from invert4tvg.config import ModelArguments

logger = logging.getLogger(__name__)

HEADS = {
    "text_timestamps": "invert4tvg.policy.text_timestamps:TextTimestampPolicy",
    "vtimellm": "invert4tvg.policy.vtimellm:VTimeLLMPolicy",
    "frame_seg": "invert4tvg.policy.frame_seg:FrameSegPolicy",
    "loc": "invert4tvg.policy.loc:LocPolicy",
    "meco": "invert4tvg.policy.meco:MecoPolicy",
}
DEFAULT_HEAD = "text_timestamps"


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


def load_policy(
    args: ModelArguments,
    for_training: bool = True,
    extra_options: dict[str, Any] | None = None,
    meta: bool = False,
) -> Policy:
    """Model + processor + head. A directory holding a LoRA adapter (``adapter_config.json``) is loaded onto its
    base model; with ``use_peft`` a new adapter is added for training. ``extra_options`` add head options of the run
    (SFT's ``think_template``) to those of :func:`head_options`.

    ``meta``: build the same model (adapters, head module, dtypes, frozen parts) on the meta device without reading
    any weights: the processes of a sharded run other than the main one, whose shards are then filled from the main
    process's weights (:func:`invert4tvg.training.fsdp.shard`), so the host holds one model, not one per process."""
    path = args.model_name_or_path

    # Imported here: config_checks pulls in the reward (NLP) stack, which benchmarks/gpu_smoke.py runs without.
    from invert4tvg.config_checks import looks_local

    if looks_local(path) and not Path(path).expanduser().exists():
        raise ModelFileError(
            f"model {path}: no such directory (relative to {Path.cwd()}), and not a hub id (org/name)"
        )
    check_safetensors(path)
    dtype = resolve_dtype(args.dtype)
    kwargs = {"dtype": dtype, "use_safetensors": True}  # never a pickled .bin: it can run code when loaded
    if args.attn_implementation:
        kwargs["attn_implementation"] = attention(args.attn_implementation)
    name, options = head_options(args)
    head = _head_class(name)
    processor = AutoProcessor.from_pretrained(path)
    adapter = Path(path) / "adapter_config.json"
    if adapter.exists():
        from peft import PeftConfig, PeftModel

        base = PeftConfig.from_pretrained(path).base_model_name_or_path
        model = _pretrained(base, kwargs, meta)
        add_head_tokens(
            model, processor, head.extra_special_tokens
        )  # before the adapter: its rows must exist
        with readable(path):
            model = PeftModel.from_pretrained(model, path, is_trainable=for_training and args.use_peft)
        if not args.use_peft:
            model = model.merge_and_unload()
    else:
        with readable(path):
            model = _pretrained(path, kwargs, meta)
    use_pretraining_positions(model)  # every pass at the positions the checkpoint was trained with
    token_ids = add_head_tokens(model, processor, head.extra_special_tokens)
    if for_training:
        model = prepare_for_training(model, args, token_ids)
        upcast_trainable(model)
    else:
        model.eval().requires_grad_(False)
    policy = head.from_options(model, processor, {**options, **(extra_options or {})})
    module = head_modules.get(model)
    if module is not None:
        if not meta and head_modules.load(model, path):
            logger.info("loaded the %s head's weights from %s", name, Path(path) / head_modules.FILE)
        elif not for_training:
            raise FileNotFoundError(
                f"{path} has no {head_modules.FILE}: the {name} head's module is untrained. Evaluate a model that "
                f"was trained with head {name} (its final/ or a checkpoint's model/)."
            )
        module.requires_grad_(for_training)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    logger.info(
        "%s %s (%s, %.2fM params, %.2fM trainable)", "built on the meta device" if meta else "loaded", path,
        dtype, n_all / 1e6, n_train / 1e6,
    )  # fmt: skip
    return policy


def _pretrained(path: str | Path, kwargs: dict[str, Any], meta: bool) -> torch.nn.Module:
    """``from_pretrained(path)``, or with ``meta`` the same architecture, dtype and generation settings on the meta
    device (only the config files are read)."""
    if not meta:
        return Qwen2_5_VLForConditionalGeneration.from_pretrained(path, **kwargs)
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(path)
    options = {k: v for k, v in kwargs.items() if k != "use_safetensors"}
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, **options)
    # A model saved without generation_config.json keeps the config's defaults.
    with contextlib.suppress(OSError):
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model


class ModelFileError(UserError, FileNotFoundError):
    """A model directory that is missing, holds no safetensors weights, or whose weights cannot be read."""


def check_safetensors(path: str | Path) -> None:
    """A local model directory must hold its weights as safetensors: a pickled ``pytorch_model.bin`` (or adapter
    ``.bin``) is refused by name instead of failing inside ``torch.load``, whose pickle could run code."""
    directory = Path(path).expanduser()
    if not directory.is_dir() or any(directory.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in directory.glob("*.bin"))
    if pickled:
        raise ModelFileError(
            f"model {path}: holds {', '.join(pickled)} (a pickle, which can run code when loaded) and no "
            "*.safetensors: invert4tvg loads safetensors only. Convert it where you trust the file (load it with "
            "transformers and save_pretrained(..., safe_serialization=True)), or use a checkpoint invert4tvg wrote."
        )


@contextlib.contextmanager
def readable(path: str | Path):
    """Name the model directory when its weights cannot be read (a truncated or damaged safetensors file)."""
    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, OSError) as err:
        if isinstance(err, UserError):
            raise
        hint = "a weights file is damaged or truncated: copy it again, or use another checkpoint"
        raise ModelFileError(
            f"model {path}: cannot load it ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
            + (f"; {hint}" if isinstance(err, SafetensorError) else "")
        ) from err


def attention(name: str) -> str:
    """``flash_attention_2`` needs the flash-attn package, which nothing installs (it compiles against the exact torch
    and CUDA versions); without it the run falls back to PyTorch's ``sdpa`` instead of failing at load time."""
    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        logger.warning(
            "attn_implementation flash_attention_2: flash-attn is not installed; using sdpa (pip install "
            "flash-attn --no-build-isolation to use it)"
        )
        return "sdpa"
    return name


def recorded_head(path: str | Path) -> dict[str, Any]:
    """The head a saved model was trained with (``{}`` for a hub id or a model saved without one)."""
    file = Path(path) / HEAD_FILE
    if not file.is_file():
        return {}
    try:
        record = json.loads(file.read_text())
    except ValueError as err:
        raise ValueError(f"{file} is not valid JSON ({err}); delete it and pass --head explicitly") from None
    if not isinstance(record, dict) or record.get("head") not in HEADS:
        raise ValueError(f"{file} names no known head ({record!r}); known: {sorted(HEADS)}")
    return record


def head_options(args: ModelArguments) -> tuple[str, dict[str, Any]]:
    """The head to build and its options: the configuration's where it sets them, else what the model was saved
    with, else the default head. A configured head unlike the saved one is a new warm start, so only the
    configuration's options apply to it."""
    recorded = recorded_head(args.model_name_or_path)
    name = args.head or recorded.get("head") or DEFAULT_HEAD
    if args.head and recorded and args.head != recorded["head"]:
        logger.warning(
            "%s was saved with head %s; building head %s as configured", args.model_name_or_path,
            recorded["head"], args.head,
        )  # fmt: skip
        recorded = {}
    configured = {
        "frames": args.head_frames,
        "ramp_epochs": args.head_loss_ramp_epochs,
        "width": args.head_width,
        "loss_weights": args.head_loss_weights,
    }
    options = {k: v for k, v in recorded.items() if k != "head"}
    options.update({k: v for k, v in configured.items() if v is not None})
    return name, options


def mixed_precision(args: ModelArguments) -> str:
    """accelerate's ``mixed_precision`` for a run that loads the model in ``args.dtype``: a half-precision dtype is
    the compute dtype (autocast), while :func:`upcast_trainable` keeps the weights being trained in fp32."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(resolve_dtype(args.dtype), "no")


def upcast_trainable(model: torch.nn.Module) -> torch.nn.Module:
    """fp32 master weights: trainable parameters are stored (and updated by AdamW) in fp32.

    A bf16 weight cannot take an update smaller than half its rounding step (a weight of 0.03 given AdamW steps of
    5e-5 never moves), so training bf16 weights in place loses most of the paper's updates. Frozen parameters (the
    vision tower, the LoRA base) stay in the loaded dtype; the forward runs in bf16 under accelerate's autocast
    (``Accelerator(mixed_precision=mixed_precision(args))``), as with transformers' Trainer and ``bf16=True``.
    """
    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.float()
    return model


def add_head_tokens(model: torch.nn.Module, processor, tokens: tuple[str, ...]) -> list[int]:
    """Add a head's special tokens to the tokenizer (a model saved with the head has them) and grow the embeddings
    when the tokenizer outgrows them (Qwen2.5-VL's embeddings have spare rows, so usually they do not). Returns
    the tokens' ids."""
    if not tokens:
        return []
    tokenizer = processor.tokenizer
    new = [t for t in tokens if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_tokens(new, special_tokens=True)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        # On the meta device (load_policy(meta=True)) there is nothing to average: the rows come from the main process.
        on_meta = model.get_input_embeddings().weight.is_meta
        model.resize_token_embeddings(len(tokenizer), mean_resizing=not on_meta)
    return tokenizer.convert_tokens_to_ids(list(tokens))


def prepare_for_training(
    model: torch.nn.Module, args: ModelArguments, token_ids: list[int] | None = None
) -> torch.nn.Module:
    """Freeze the vision tower, enable gradient checkpointing, add LoRA adapters. ``token_ids``: a head's new
    tokens, whose embedding rows LoRA alone would never train (peft's trainable tokens train just those rows; with
    tied embeddings the LM-head rows are the same weights)."""
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
            trainable_token_indices=_trainable_tokens(model, token_ids),
        )
        model = get_peft_model(model, config)
    return model


def _trainable_tokens(model: torch.nn.Module, token_ids: list[int] | None) -> dict[str, list[int]] | None:
    """peft's trainable tokens for a head's new tokens: their embedding rows and, where the LM head is not tied to
    the embeddings (Qwen2.5-VL-7B), its rows too; without those the model could never learn to emit them."""
    if not token_ids:
        return None
    rows = {"embed_tokens": list(token_ids)}
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head is not None and head.weight.data_ptr() != embed.weight.data_ptr():
        rows["lm_head"] = list(token_ids)
    return rows


def _vision_tower(model: torch.nn.Module) -> torch.nn.Module:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.model.visual
