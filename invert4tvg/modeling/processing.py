"""Build processor inputs from decoded frames: the single place where video reaches the Qwen2.5-VL processor.

Every path (trainer, rollout engines, evaluation) goes through :func:`processor_inputs`, so all of them hand the
processor the same frames, the same ``video_metadata`` (hence the same ``second_per_grid_ts``) and no second resize.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import BatchFeature, ProcessorMixin

from invert4tvg.data.frames import DecodedVideo

# Qwen2.5-VL's special tokens, in Qwen's order (their ids follow the trained vocabulary here).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
VISION_SPECIAL_TOKENS = SPECIAL_TOKENS[3:]


def render_prompt(
    processor: ProcessorMixin, messages: list[dict[str, Any]], add_generation_prompt: bool = True
) -> str:
    """Chat-template ``messages`` into prompt text with one ``<|video_pad|>`` placeholder per video."""
    return processor.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


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
            **video_processor_kwargs(processor),
        }
    processor.tokenizer.padding_side = padding_side
    return processor(text=list(texts), padding=True, return_tensors="pt", **kwargs)


def video_processor_kwargs(processor: ProcessorMixin) -> dict[str, Any]:
    """Processor overrides for frames the video pipeline already sampled and sized (also what the vLLM engine
    sends as ``mm_processor_kwargs``, so both paths process a video identically)."""
    kwargs: dict[str, Any] = {"do_resize": False, "do_sample_frames": False}
    if hasattr(processor.video_processor, "cap_pixels_per_frame"):
        kwargs["cap_pixels_per_frame"] = False  # the video pipeline already applied the pixel budget
    return kwargs


def vision_token_ids(tokenizer) -> list[int]:
    """Ids of the vision special tokens, which a completion must never contain (suppressed in generation)."""
    ids = [tokenizer.convert_tokens_to_ids(tok) for tok in VISION_SPECIAL_TOKENS]
    return sorted({i for i in ids if i is not None and i != tokenizer.unk_token_id})


def eos_token_ids(model, tokenizer) -> list[int]:
    """The ids that end a completion: the model's generation config's (Qwen2.5-VL lists two), else the
    tokenizer's EOS."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, list) else [eos]
    return sorted({int(i) for i in ids if i is not None})


def repeat_inputs(inputs: BatchFeature, counts: Sequence[int]) -> BatchFeature:
    """Repeat row ``i`` of a processed batch ``counts[i]`` times, video tensors included."""
    if all(c == 1 for c in counts):
        return inputs
    return select_inputs(inputs, [i for i, c in enumerate(counts) for _ in range(c)])


def select_inputs(inputs: BatchFeature, index: Sequence[int]) -> BatchFeature:
    """Rows ``index`` (repeats allowed) of a processed batch, video tensors included.

    Video patches are stored concatenated over videos (``pixel_values_videos`` has ``prod(video_grid_thw[i])`` rows
    for video ``i``; one video per row here), so they are split per video before selecting.
    """
    import torch

    rows = list(index)
    out = {}
    for key, value in inputs.items():
        if key == "pixel_values_videos":
            per_video = torch.split(value, inputs["video_grid_thw"].prod(-1).tolist())
            out[key] = torch.cat([per_video[i] for i in rows])
        elif isinstance(value, torch.Tensor):
            out[key] = value[rows]
        elif isinstance(value, list):
            out[key] = [value[i] for i in rows]
        else:
            out[key] = value
    return BatchFeature(out)
