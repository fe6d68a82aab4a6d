"""GPU smoke run: a few GRPO steps of the real Qwen2.5-VL-3B architecture on one real-size video, LoRA and full FT.

The model is built from Qwen2.5-VL-3B-Instruct's published config.json (values below; random weights, nothing is
downloaded) and trained as the shipped 3B recipe trains it: fp32 trainable weights with bf16 autocast (accelerate
``mixed_precision="bf16"``), frozen vision tower, gradient checkpointing, ``beta = 0.04`` (reference pass), G = 8
completions of one video per step. The video is synthetic (random frames, no decoder): a 30 s, 640x480 source sampled
by the package's own rules at 2 fps within the paper's 3584*28*28 (~2.8 M) pixel budget.

It reports, per mode, the median split of a step (rollout, reference pass, update), tokens/s and the peak GPU memory.
It imports only torch, transformers, accelerate, peft and the pieces of this package that need nothing else (no trl,
ray, spacy, av, datasets or qwen-vl-utils), so it runs on a bare GPU machine with just the package directory:

    python benchmarks/gpu_smoke.py [--steps 3] [--max-new-tokens 256] [--modes lora full] [--json out.json]
    python benchmarks/gpu_smoke.py --tiny        # the tiny offline model on CPU: checks the script end to end

Without a GPU and without ``--tiny`` it falls back to ``--tiny`` (so ``make bench`` runs it everywhere).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import torch

import invert4tvg  # noqa: F401  (torchvision shim before transformers, only on CPU builds)
from invert4tvg.data.frames import DecodedVideo, VideoSampling
from invert4tvg.data.sampling import plan_sampling
from invert4tvg.grpo import modelprep
from invert4tvg.grpo.loss import LossConfig, aggregate, compute_advantages, loss_normalizer, per_token_loss
from invert4tvg.policy.loading import prepare_for_training, upcast_trainable
from invert4tvg.policy.text_timestamps import TextTimestampPolicy
from invert4tvg.rollout.base import SamplingParams
from invert4tvg.rollout.hf import HFEngine

# Qwen/Qwen2.5-VL-3B-Instruct config.json (text and vision towers). The token ids of the special tokens come from
# the offline tokenizer used here; the vocabulary keeps the real size so the embedding, lm_head and logits cost what
# they cost in the real model.
QWEN25_VL_3B_TEXT = {
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    "sliding_window": 32768,
    "use_sliding_window": False,
    "max_window_layers": 70,
    "attention_dropout": 0.0,
    "tie_word_embeddings": True,
}
QWEN25_VL_3B_VISION = {
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
    "out_hidden_size": 2048,
}
# The shipped 3B recipe (recipes/configs/invert4tvg_qwen25vl_3b.yaml).
RECIPE = dict(
    learning_rate=5e-5,
    num_generations=8,
    beta=0.04,
    loss_type="grpo",
    logprob_batch_size=8,
    max_grad_norm=1.0,
)
PROMPT = (
    "Find the start and end time of the event in the video: a person opens the door. Think first, then answer as "
    "<think>...</think> <answer>S to E</answer> in seconds."
)


def synthetic_video(seconds: float, source_fps: float, height: int, width: int, sampling: VideoSampling):
    """Random frames, sized and timed exactly as ``decode_video`` would sample such a file."""
    total = int(seconds * source_fps)
    plan = plan_sampling(total, source_fps, height, width, sampling)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(len(plan.indices), plan.height, plan.width, 3), dtype=np.uint8)
    return DecodedVideo(
        frames=frames,
        timestamps=plan.indices / source_fps,
        frame_indices=plan.indices,
        source_fps=source_fps,
        range_num_frames=plan.range_num_frames,
        path="synthetic",
        range_start=plan.range_start,
    )


def build(tiny: bool, device: torch.device, dtype: torch.dtype, workdir: str):
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from invert4tvg.policy.tiny_model import build_tiny_model

    path = build_tiny_model(workdir, seed=0)  # its tokenizer and processor serve the 3B model too
    processor = AutoProcessor.from_pretrained(path)
    if tiny:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=dtype)
        return model.to(device), processor
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")}
    config = Qwen2_5_VLConfig(
        text_config={
            **QWEN25_VL_3B_TEXT,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config=QWEN25_VL_3B_VISION,
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model, processor


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_mode(mode: str, cli, accelerator, video, workdir: str) -> dict:
    device = accelerator.device
    compute = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, processor = build(cli.tiny, device, compute, workdir)
    lora = mode == "lora"
    model_args = SimpleNamespace(
        freeze_vision_tower=True,
        gradient_checkpointing=True,
        use_peft=lora,
        lora_r=64,
        lora_alpha=128,
        lora_dropout=0.05,
        lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = upcast_trainable(prepare_for_training(model, model_args))
    modelprep.disable_dropout(model)
    modelprep.check_master_weights(model)
    policy = TextTimestampPolicy(model, processor)
    ref_model = modelprep.build_reference(model, accelerator)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=RECIPE["learning_rate"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
    )
    prepared, optimizer = accelerator.prepare(model, optimizer)
    modelprep.check_devices(device, {"policy": model, "reference": ref_model})
    engine = HFEngine(model, processor, max_batch_sequences=RECIPE["num_generations"])
    g = RECIPE["num_generations"]
    loss_config = LossConfig(
        loss_type=RECIPE["loss_type"], beta=RECIPE["beta"], max_completion_length=cli.max_new_tokens
    )
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}]
    request = policy.rollout_request(messages, video, g)
    sampling = SamplingParams(temperature=1.0, max_tokens=cli.max_new_tokens)
    steps = []
    for _ in range(cli.steps):
        t = {}
        sync(device)
        t0 = time.perf_counter()
        completions = engine.generate([request], sampling)
        sync(device)
        t["rollout"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        batch = policy.sequence_batch([request], completions).to(device)
        mask = batch.completion_mask.float()
        advantages = compute_advantages(torch.rand(g), g).values.to(device)  # cost, not learning, is measured
        micro = [
            list(range(i, min(i + RECIPE["logprob_batch_size"], g)))
            for i in range(0, g, RECIPE["logprob_batch_size"])
        ]
        prepared.train()
        ref_logps = torch.zeros_like(mask)
        ref_ctx = (
            accelerator.autocast() if ref_model is not None else modelprep.reference_context(model, None)
        )
        with torch.no_grad(), ref_ctx:
            for rows in micro:
                ref_logps[rows] = policy.completion_logprobs(ref_model or model, batch.select(rows))
        sync(device)
        t["reference"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        normalizer = loss_normalizer(mask, loss_config)
        for k, rows in enumerate(micro):
            with nullcontext() if k == len(micro) - 1 else accelerator.no_sync(prepared):
                logps = policy.completion_logprobs(prepared, batch.select(rows))
                m = mask[rows]
                loss, _ = per_token_loss(
                    logps, logps.detach(), advantages[rows], m, loss_config, ref_logps[rows]
                )
                norm = (
                    normalizer[rows]
                    if isinstance(normalizer, torch.Tensor) and normalizer.dim()
                    else normalizer
                )
                accelerator.backward(aggregate(loss, m, norm, loss_config))
        accelerator.clip_grad_norm_(params, RECIPE["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        t["update"] = time.perf_counter() - t0
        t["step"] = t["rollout"] + t["reference"] + t["update"]
        t["generated_tokens"] = int(mask.sum())
        t["sequence_tokens"] = int(batch.inputs["attention_mask"].sum())
        steps.append(t)
    timed = steps[1:] or steps  # the first step pays for kernel selection and allocator growth
    med = {k: statistics.median(s[k] for s in timed) for k in steps[0]}
    result = {
        "mode": mode,
        "trainable_params_M": round(sum(p.numel() for p in params) / 1e6, 1),
        "total_params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "video_tokens": int(batch.inputs["video_grid_thw"].prod(-1).sum()) // 4,
        "sequence_length": batch.inputs["input_ids"].shape[1],
        **{
            f"median_{k}_s": round(v, 3)
            for k, v in med.items()
            if k in ("rollout", "reference", "update", "step")
        },
        "rollout_tokens_per_s": round(med["generated_tokens"] / med["rollout"], 1),
        "trained_tokens_per_s": round(med["sequence_tokens"] / med["update"], 1),
        "first_step_s": round(steps[0]["step"], 3),
        "peak_memory_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.type == "cuda"
        else None,
    }
    accelerator.free_memory(prepared, optimizer)
    del model, ref_model, policy, engine, prepared, optimizer, params
    return result


def main() -> None:
    from accelerate import Accelerator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="the tiny offline model on CPU (checks the script)"
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--modes", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    parser.add_argument("--bf16-on-cpu", action="store_true", help="with --tiny: bf16 autocast on CPU too")
    parser.add_argument("--json", help="also write the results here")
    cli = parser.parse_args()
    if not cli.tiny and not torch.cuda.is_available():
        print("no CUDA device: running the tiny model on CPU instead (--tiny)")
        cli.tiny = True
    if cli.tiny:
        cli.max_new_tokens = min(cli.max_new_tokens, 32)
        sampling = VideoSampling(min_pixels=3136, total_pixels=200704)
        video = synthetic_video(8.0, 8.0, 56, 56, sampling)
        accelerator = Accelerator(cpu=True, mixed_precision="bf16" if cli.bf16_on_cpu else "no")
    else:
        video = synthetic_video(30.0, 30.0, 480, 640, VideoSampling())  # Charades-like; the paper's budget
        accelerator = Accelerator(mixed_precision="bf16")
    import accelerate
    import peft
    import transformers

    header = {
        "device": torch.cuda.get_device_name()
        if accelerator.device.type == "cuda"
        else platform.processor() or "cpu",
        "model": "tiny offline Qwen2.5-VL" if cli.tiny else "Qwen2.5-VL-3B architecture, random weights",
        "video": f"{len(video.frames)} frames of {video.frames.shape[2]}x{video.frames.shape[1]} at 2 fps",
        "completion_tokens": cli.max_new_tokens,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
            "peft": peft.__version__,
        },
    }
    print(json.dumps(header, indent=2))
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for mode in cli.modes:
            results.append(run_mode(mode, cli, accelerator, video, workdir))
            print(json.dumps(results[-1], indent=2), flush=True)
    if cli.json:
        with open(cli.json, "w") as handle:
            json.dump({**header, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
