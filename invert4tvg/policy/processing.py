"""Build processor inputs from decoded frames: the single place where video reaches the Qwen2.5-VL processor.

Every path (trainer, rollout engines, evaluation) goes through :func:`processor_inputs`, so all of them hand the
processor the same frames, the same ``video_metadata`` (hence the same ``second_per_grid_ts``) and no second resize.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import BatchFeature, ProcessorMixin

from invert4tvg.data.frames import DecodedVideo


def render_prompt(processor: ProcessorMixin, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
    """Chat-template ``messages`` into prompt text with one ``<|video_pad|>`` placeholder per video."""
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def processor_inputs(
    processor: ProcessorMixin,
    texts: Sequence[str],
    videos: Sequence[DecodedVideo] | None,
    padding_side: str = "left",
) -> BatchFeature:
    """Tokenise ``texts`` (already chat-templated) with their videos into model inputs.

    Frames were sized by the video pipeline (multiples of 28 within the pixel budget), so the processor must not
    resize or resample them; their timing goes in as ``video_metadata``.
    """
    kwargs: dict[str, Any] = {}
    if videos:
        kwargs = {
            "videos": [v.frames for v in videos],
            "video_metadata": [v.video_metadata() for v in videos],
            "do_resize": False,
            "do_sample_frames": False,
        }
    processor.tokenizer.padding_side = padding_side
    return processor(text=list(texts), padding=True, return_tensors="pt", **kwargs)
