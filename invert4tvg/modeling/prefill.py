"""Prefill once per prompt: the G samples of a request start from one shared KV cache.

Generating G samples of a video prompt with the prompt repeated G times runs the vision tower and the prompt
tokens G times. Here the prompt, all but its last token, runs once per request (vision included); its KV cache is
repeated for the request's samples, and ``generate`` continues from it: the last prompt token and every new token go
through the model per sample, at the mrope positions they have in the repeated path. The sampled distribution is the repeated path's; the log-probs
of sampled tokens agree to float precision (tests/test_shared_prefix.py, tests/test_rollout_contract.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import BatchFeature

from invert4tvg.modeling.positions import mrope_module, mrope_positions


def prefill_once(
    model: torch.nn.Module, inputs: BatchFeature, counts: Sequence[int]
) -> dict[str, Any] | None:
    """``generate`` keyword arguments for ``counts[i]`` samples of row ``i`` of ``inputs`` (left-padded prompts with
    their video tensors) that start from one prefill per row. None where this model cannot continue that way."""
    owner = mrope_module(model)  # keeps Qwen2.5-VL's rope_deltas between generation steps
    if owner is None or inputs.get("video_grid_thw") is None or "mm_token_type_ids" not in inputs:
        # Text-only rows: the model's positions for a continued generation would not match its first step's.
        return None
    head = {k: v for k, v in inputs.items()}
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in head:
            head[key] = head[key][:, :-1]  # left-padded: the last column is every row's last prompt token
    cache = model(**head, use_cache=True, logits_to_keep=1).past_key_values
    repeats = torch.tensor(list(counts), device=inputs["input_ids"].device)
    for layer in cache.layers:
        layer.keys = layer.keys.repeat_interleave(repeats, dim=0)
        layer.values = layer.values.repeat_interleave(repeats, dim=0)
    # generate places the first uncached token (the last prompt token) at its text index plus the stored delta,
    # and each later token one past the previous. The delta is set so that the last prompt token gets the position
    # it has in the whole prompt (the prefill above ran without it, so the model's stored delta is for a shorter row).
    positions = mrope_positions(model, inputs)
    last_index = inputs["attention_mask"].sum(-1, keepdim=True) - 1
    owner.rope_deltas = (positions[0, :, -1:] - last_index).repeat_interleave(repeats, dim=0)
    return {
        "input_ids": inputs["input_ids"].repeat_interleave(repeats, dim=0),
        "attention_mask": inputs["attention_mask"].repeat_interleave(repeats, dim=0),
        "past_key_values": cache,
    }
