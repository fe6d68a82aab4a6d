"""The embedded default model: builds offline, reloads with from_pretrained, and sees video with correct timing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from invert4tvg.data.frames import DecodedVideo
from invert4tvg.modeling.processing import SPECIAL_TOKENS, processor_inputs, render_prompt, vision_token_ids
from invert4tvg.policy.tiny_qwen import build_tiny_model, count_parameters

MESSAGES = [
    {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "the red circle grows."}]}
]


def video(
    num_frames: int, fps: float, source_fps: float = 30.0, size: int = 56, seed: int = 0
) -> DecodedVideo:
    rng = np.random.default_rng(seed)
    step = source_fps / fps
    indices = np.round(np.arange(num_frames) * step).astype(int)
    return DecodedVideo(
        frames=rng.integers(0, 255, (num_frames, size, size, 3), dtype=np.uint8),
        timestamps=indices / source_fps,
        frame_indices=indices,
        source_fps=source_fps,
        range_num_frames=round(num_frames * step),
        path="synthetic.mp4",
    )


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    return model, processor


def test_size_and_architecture(loaded):
    model, processor = loaded
    assert 0.5e6 < count_parameters(model) < 1.5e6
    assert model.config.text_config.num_hidden_layers == 2
    vision = model.config.vision_config
    assert (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (14, 2, 2)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    vocab = processor.tokenizer.get_vocab()
    assert all(tok in vocab for tok in SPECIAL_TOKENS)
    # Digits are single tokens (Qwen2's pre-tokenizer), so timestamps tokenise like in the real models.
    ids = processor.tokenizer("12.50 to 17.25", add_special_tokens=False)["input_ids"]
    assert processor.tokenizer.convert_ids_to_tokens(ids)[:2] == ["1", "2"]


@pytest.mark.parametrize("fps", [2.0, 1.0, 4.0])
def test_video_timing_reaches_the_model(loaded, fps):
    _, processor = loaded
    inputs = processor_inputs(processor, [render_prompt(processor, MESSAGES)], [video(8, fps)])
    # Qwen2.5-VL's temporal positions advance by second_per_grid_ts = temporal_patch_size / fps per grid step.
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([2.0 / fps])
    assert inputs["video_grid_thw"].tolist() == [[4, 4, 4]]


def test_without_metadata_transformers_would_assume_24_fps(loaded):
    """Why processor_inputs always passes video_metadata: the processor's own default is silently wrong."""
    _, processor = loaded
    prompt = render_prompt(processor, MESSAGES)
    plain = processor(text=[prompt], videos=[video(8, 2.0).frames], do_resize=False, return_tensors="pt")
    assert plain["second_per_grid_ts"].tolist() != pytest.approx([1.0])


def test_forward_and_generate_with_video(loaded):
    model, processor = loaded
    inputs = processor_inputs(processor, [render_prompt(processor, MESSAGES)], [video(8, 2.0)])
    with torch.no_grad():
        logits = model(**inputs).logits
        assert logits.shape[:2] == inputs["input_ids"].shape
        assert torch.isfinite(logits).all()
        out = model.generate(
            **inputs, max_new_tokens=8, do_sample=False, suppress_tokens=vision_token_ids(processor.tokenizer)
        )
    new = out[0, inputs["input_ids"].shape[1] :]
    assert 0 < len(new) <= 8
    assert not set(new.tolist()) & set(vision_token_ids(processor.tokenizer))


def test_the_video_changes_the_output(loaded):
    model, processor = loaded
    prompt = render_prompt(processor, MESSAGES)
    with torch.no_grad():
        a = model(**processor_inputs(processor, [prompt], [video(8, 2.0, seed=1)])).logits[0, -1]
        b = model(**processor_inputs(processor, [prompt], [video(8, 2.0, seed=2)])).logits[0, -1]
    assert not torch.allclose(a, b)


def test_deterministic_for_a_seed(tmp_path):
    a = build_tiny_model(tmp_path / "a", seed=3)
    b = build_tiny_model(tmp_path / "b", seed=3)
    c = build_tiny_model(tmp_path / "c", seed=4)
    load = Qwen2_5_VLForConditionalGeneration.from_pretrained
    sa, sb, sc = (load(p).state_dict() for p in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_command_line(tmp_path):
    out = tmp_path / "cli-model"
    run = subprocess.run(
        [sys.executable, "-m", "invert4tvg.cli", "tiny-model", "--out", str(out), "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "parameters" in run.stdout
    assert AutoProcessor.from_pretrained(out).tokenizer.chat_template
