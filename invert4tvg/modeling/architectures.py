"""The published Qwen2.5-VL architectures the shipped recipes train, and a model built from a configuration without
weights (on the meta device), so memory can be planned and GPU benchmarks run without downloading anything.

The values are those of ``Qwen/Qwen2.5-VL-3B-Instruct`` and ``Qwen/Qwen2.5-VL-7B-Instruct``'s ``config.json``. Only
torch and transformers are imported (``benchmarks/gpu_smoke.py`` runs on machines without the rest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "hidden_act": "silu",
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "tokens_per_second": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
}
_TEXT = {
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    "sliding_window": 32768,
    "use_sliding_window": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
# Token ids of the released tokenizer (the same in both sizes).
TOKEN_IDS = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}
PUBLISHED: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": {
        "text": {
            **_TEXT,
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "max_window_layers": 70,
            "tie_word_embeddings": True,
        },
        "vision": {**_VISION, "out_hidden_size": 2048},
        "tie_word_embeddings": True,
    },
    "Qwen/Qwen2.5-VL-7B-Instruct": {
        "text": {
            **_TEXT,
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_window_layers": 28,
            "tie_word_embeddings": False,
        },
        "vision": {**_VISION, "out_hidden_size": 3584},
        "tie_word_embeddings": False,
    },
}


def published_config(name: str, token_ids: dict[str, int] | None = None):
    """The ``Qwen2_5_VLConfig`` of a published model (``name`` as on the hub); ``token_ids`` overrides the special
    token ids (e.g. a smaller offline tokenizer's)."""
    from transformers import Qwen2_5_VLConfig

    if name not in PUBLISHED:
        raise KeyError(
            f"{name}: not one of the published architectures known offline ({', '.join(PUBLISHED)})"
        )
    spec = PUBLISHED[name]
    return Qwen2_5_VLConfig(
        text_config=dict(spec["text"]),
        vision_config=dict(spec["vision"]),
        tie_word_embeddings=spec["tie_word_embeddings"],
        **{**TOKEN_IDS, **(token_ids or {})},
    )


def model_config(name_or_path: str):
    """The configuration of a local model directory, a published architecture, or a hub id in the local cache."""
    from transformers import AutoConfig

    if name_or_path in PUBLISHED and not Path(name_or_path).exists():
        return published_config(name_or_path)
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"{name_or_path}: no config.json there and not a published architecture known offline "
            f"({', '.join(PUBLISHED)}): {str(err).splitlines()[0]}"
        ) from None


def meta_model(config) -> torch.nn.Module:
    """The model of ``config`` on the meta device: shapes and names, no memory, no weights."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        return Qwen2_5_VLForConditionalGeneration(config)
