"""The embedded default model: a ~1 M-parameter Qwen2.5-VL built offline.

Tests and the demo cannot download weights, so this module builds a real ``Qwen2_5_VLForConditionalGeneration``
(2 text layers, a 2-block vision tower with Qwen2.5-VL's patch 14 / spatial merge 2 / temporal patch 2), a
byte-level BPE tokenizer trained here on the project's own prompt templates and synthetic-benchmark vocabulary
(same pre-tokenizer as Qwen2, so digits stay single tokens), the Qwen special tokens, a Qwen2-VL chat template, and
a ``Qwen2_5_VLProcessor``. Everything is written with ``save_pretrained`` so the same loading code serves the tiny
model and ``Qwen/Qwen2.5-VL-3B-Instruct``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from invert4tvg.modeling.processing import SPECIAL_TOKENS
from invert4tvg.policy.chat_template import QWEN2_VL_CHAT_TEMPLATE


@dataclass(frozen=True)
class TinyModelSpec:
    """Sizes of the tiny model. The defaults give about 1 M parameters."""

    vocab_size: int = 1024  # BPE target; the config rounds the final vocabulary up to a multiple of 64
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    mrope_section: tuple[int, int, int] = (4, 6, 6)  # sums to head_dim / 2 = 16
    rope_theta: float = 10000.0
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_num_heads: int = 4
    tokens_per_second: int = 2  # as in Qwen2.5-VL's released configs
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = True  # as Qwen2.5-VL-3B; False as the 7B (a separate LM head)


def default_corpus() -> list[str]:
    """Text the tokenizer is trained on: prompt templates, benchmark vocabulary, answers with numbers."""
    # Imported here: the benchmark generator needs PyAV and the task package datasets, and benchmarks/gpu_smoke.py
    # builds a tokenizer from its own corpus on machines without either.
    from invert4tvg.data.synthetic import vocabulary
    from invert4tvg.tasks.prompts import template_corpus

    texts = list(template_corpus()) + list(vocabulary())
    # Answers in the trained format, so "to", ".", digits and the tags become frequent merges.
    for start in range(0, 60):
        end = start + 1 + (start * 7) % 13
        texts.append(
            f"<think>The event happens here.</think> <answer>{start}.{start % 10}0 to {end}.50</answer>"
        )
    texts += [str(i) for i in range(1000)]
    return texts


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> Qwen2Tokenizer:
    """Train a byte-level BPE with Qwen2's pre-tokenizer and wrap it as a ``Qwen2Tokenizer``."""
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    bpe.train_from_iterator(list(corpus), trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    tokenizer.chat_template = QWEN2_VL_CHAT_TEMPLATE
    tokenizer.model_max_length = 32768
    return tokenizer


def build_processor(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLProcessor:
    # Same pixel limits and normalisation as the released Qwen2.5-VL processors.
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280},
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=mean,
        image_std=std,
    )
    video_processor = Qwen2VLVideoProcessor(
        size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 768},
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=mean,
        image_std=std,
    )
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )


def tiny_config(tokenizer: Qwen2Tokenizer, spec: TinyModelSpec) -> Qwen2_5_VLConfig:
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    vocab_size = -(-len(tokenizer) // 64) * 64
    head_dim = spec.hidden_size // spec.num_attention_heads
    if sum(spec.mrope_section) * 2 != head_dim:
        raise ValueError(f"mrope_section {spec.mrope_section} must sum to head_dim/2 = {head_dim // 2}")
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": spec.rope_theta,
            "mrope_section": list(spec.mrope_section),
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": spec.tie_word_embeddings,
    }
    vision_config = {
        "depth": spec.vision_depth,
        "hidden_size": spec.vision_hidden_size,
        "intermediate_size": spec.vision_intermediate_size,
        "num_heads": spec.vision_num_heads,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "tokens_per_second": spec.tokens_per_second,
        "window_size": 112,
        "out_hidden_size": spec.hidden_size,
        "fullatt_block_indexes": [spec.vision_depth - 1],
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec.tie_word_embeddings,
    )


def build_tiny_model(
    out_dir: str | Path,
    seed: int = 0,
    spec: TinyModelSpec | None = None,
    corpus: Iterable[str] | None = None,
) -> Path:
    """Build, initialise (deterministically for ``seed``) and save the tiny model, tokenizer and processor."""
    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(default_corpus() if corpus is None else corpus, spec.vocab_size)
    config = tiny_config(tokenizer, spec)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=[
            tokenizer.convert_tokens_to_ids("<|im_end|>"),
            tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        ],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out)
    build_processor(tokenizer).save_pretrained(out)
    return out


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
