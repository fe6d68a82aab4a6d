"""Qwen2.5-VL's 3-D rotary positions (mrope), as the model was pretrained: THE one rule every pass uses.

A prompt is text and vision segments. Text gets the same position on all three axes (temporal, height, width),
one more per token. A vision segment of ``t x h x w`` merged patches starts at the position ``s`` that the next
text token would have had; its patch ``(i, j, k)`` sits at ``(s + floor(i * interval), s + j, s + k)``, with
``interval = tokens_per_second * second_per_grid_ts`` for a video (1 for an image). **Text after a vision segment
starts at that segment's largest position + 1.** For a video the largest position is usually the temporal one,
``s + floor((t - 1) * interval)``, which can run far past ``s + max(h, w)``.

That is the original Qwen2.5-VL implementation, the one the released checkpoints were trained with, and vLLM's
(``vllm/model_executor/models/qwen2_5_vl.py``, ``get_mrope_input_positions``). transformers from 5.3 up to at least
5.19 (every version vLLM 0.32 accepts, ``>=5.16.1,<5.20``) starts the text after a vision segment at
``s + max(h, w) // spatial_merge_size`` instead (transformers issue #45381): every token after a video is scored at
a position the model never saw in pretraining, and the trainer and vLLM score different models (log-prob gaps of
3e-3 to 1.4e-2 on the tiny model, 1e-6 with this rule). No transformers release in vLLM 0.32's range has the
original rule, so this module overrides it rather than pinning a version: :func:`use_pretraining_positions` makes
a loaded model's own position computation (``generate``, plain forward passes, readouts, evaluation) call
:func:`rope_index`, and the passes that build positions themselves (``prefill_once``, the shared-prefix layout)
call :func:`mrope_positions`. tests/test_positions.py pins the rule on a hand-computed example in every layout;
tests/test_vllm_engine.py (make test-vllm) checks it against vLLM's own positions.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from typing import Any

import torch

_TEXT, _IMAGE, _VIDEO = 0, 1, 2  # mm_token_type_ids values (the processor's)


def rope_index(
    input_ids: torch.Tensor,
    mm_token_type_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    *,
    spatial_merge_size: int,
    tokens_per_second: float,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positions (3, B, L), deltas (B, 1))`` for a batch of (possibly left-padded) rows, with transformers'
    ``get_rope_index`` signature. Padding keeps position 0; ``deltas`` is ``max position + 1 - real length``, the
    offset ``generate`` adds to the index of every new token."""
    rows, length = input_ids.shape
    positions = torch.zeros(3, rows, length, dtype=torch.long, device=input_ids.device)
    grids = {
        _IMAGE: iter(image_grid_thw.tolist()) if image_grid_thw is not None else iter(()),
        _VIDEO: iter(video_grid_thw.tolist()) if video_grid_thw is not None else iter(()),
    }
    seconds = iter(second_per_grid_ts.tolist()) if second_per_grid_ts is not None else None
    deltas = []
    for row in range(rows):
        real = (
            attention_mask[row].bool() if attention_mask is not None else torch.ones(length, dtype=torch.bool)
        )
        kinds = mm_token_type_ids[row][real.to(mm_token_type_ids.device)].tolist()
        parts, start = [], 0
        for kind, run in itertools.groupby(kinds):
            count = len(list(run))
            if kind == _TEXT:
                parts.append(torch.arange(count).expand(3, count) + start)
            else:
                t, h, w = next(grids[kind])
                h, w = h // spatial_merge_size, w // spatial_merge_size
                interval = 1.0
                if kind == _VIDEO:
                    interval = tokens_per_second * (float(next(seconds)) if seconds is not None else 1.0)
                part = _vision_positions(t, h, w, interval) + start
                if part.shape[1] != count:
                    raise ValueError(
                        f"row {row}: a vision segment of {count} tokens does not match its grid "
                        f"{t}x{h}x{w} (after the {spatial_merge_size}x{spatial_merge_size} merge)"
                    )
                parts.append(part)
            start = int(parts[-1].max()) + 1
        flat = torch.cat(parts, dim=1) if parts else torch.zeros(3, 0, dtype=torch.long)
        positions[:, row, real.to(positions.device)] = flat.to(positions.device)
        deltas.append((int(flat.max()) + 1 if flat.numel() else 0) - flat.shape[1])
    return positions, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)


def _vision_positions(t: int, h: int, w: int, interval: float) -> torch.Tensor:
    """(3, t*h*w) offsets of a vision segment's merged patches, row-major over (t, h, w). The temporal index is
    truncated after scaling in float64, as vLLM does (``int64(i * t_factor)``)."""
    temporal = (torch.arange(t, dtype=torch.float64) * interval).long()
    grid = torch.stack(
        torch.meshgrid(temporal, torch.arange(h), torch.arange(w), indexing="ij")  # (3, t, h, w)
    )
    return grid.reshape(3, -1)


def _config_rule(model: torch.nn.Module) -> dict[str, Any]:
    vision = model.config.vision_config
    return {
        "spatial_merge_size": vision.spatial_merge_size,
        "tokens_per_second": getattr(vision, "tokens_per_second", 1.0),
    }


def mrope_module(model: torch.nn.Module) -> torch.nn.Module | None:
    """The module that computes positions in the forward pass (``Qwen2_5_VLModel``); None for other models."""
    inner = getattr(model, "module", model)  # DDP
    return next(
        (m for m in inner.modules() if hasattr(m, "get_rope_index") and hasattr(m, "rope_deltas")), None
    )


def use_pretraining_positions(model: torch.nn.Module) -> torch.nn.Module:
    """Make ``model``'s own position computation use :func:`rope_index` (an attribute of this instance only; other
    models in the process are untouched). Returns ``model``. A no-op for a model without mrope."""
    owner = mrope_module(model)
    if owner is not None:
        owner.get_rope_index = functools.partial(rope_index, **_config_rule(owner))
    return model


def mrope_positions(model: torch.nn.Module, inputs: Mapping[str, Any]) -> torch.Tensor:
    """The (3, rows, L) position ids of ``inputs`` (left-padded rows, the processor's tensors) under the rule above.
    Rows without vision get 0..L-1 whatever their padding, the model's own fallback for text (rotary embeddings are
    relative, so only the offsets between real tokens matter)."""
    ids = inputs["input_ids"]
    owner = mrope_module(model)
    has_vision = inputs.get("video_grid_thw") is not None or inputs.get("image_grid_thw") is not None
    if owner is None or not has_vision or "mm_token_type_ids" not in inputs:
        return torch.arange(ids.shape[1], device=ids.device).view(1, 1, -1).expand(3, ids.shape[0], -1)
    positions, _ = rope_index(
        ids,
        inputs["mm_token_type_ids"],
        image_grid_thw=inputs.get("image_grid_thw"),
        video_grid_thw=inputs.get("video_grid_thw"),
        second_per_grid_ts=inputs.get("second_per_grid_ts"),
        attention_mask=inputs.get("attention_mask"),
        **_config_rule(owner),
    )
    return positions
