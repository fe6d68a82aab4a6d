"""GPU smoke run: a few GRPO steps of the real Qwen2.5-VL-3B (or 7B) architecture on one real-size video: LoRA, full
fine-tuning, and full fine-tuning sharded with FSDP2 over the GPUs of a ``torchrun`` launch.

The model is built from the published config.json (``invert4tvg/modeling/architectures.py``; random weights, nothing
is downloaded) and trained as the shipped recipes train it: fp32 trainable weights with bf16 autocast (accelerate
``mixed_precision="bf16"``), frozen vision tower, gradient checkpointing, ``beta = 0.04`` (reference pass), G = 8
completions of one video per step, up to 1024 new tokens (the recipes' ``max_completion_length``). The video is
synthetic (random frames, no decoder): a 30 s, 640x480 source sampled by the package's own rules at 2 fps within the
paper's 3584*28*28 (~2.8 M) pixel budget. The tokenizer is a small byte-level BPE trained here (the vocabulary keeps
the real size, so embeddings, LM head and logits cost what they cost); answers are not parsed.

Per mode it reports the median split of a step (rollout, reference pass, update), tokens/s, the KL between policy and
reference at step 0 (0 when the reference is the policy, as it must be), and the peak GPU memory beside the memory
plan's estimate (``invert4tvg plan``). It imports only torch, transformers, accelerate, peft and the parts of this
package that need nothing else (no trl, ray, spacy, av, datasets, vllm), so it runs on a bare GPU machine with the
repository checked out:

    python benchmarks/gpu_smoke.py [--model 3b|7b] [--steps 3] [--max-new-tokens 1024] [--modes lora full] [--json F]
    torchrun --nproc_per_node 8 benchmarks/gpu_smoke.py --model 7b --modes full   # FSDP2 over 8 GPUs
    python benchmarks/gpu_smoke.py --tiny        # the tiny architecture on CPU: checks the script end to end

Without CUDA it exits with an error unless ``--tiny`` is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

# Run from the repository root as documented (``python benchmarks/gpu_smoke.py``): the checkout's package, not an
# installed copy, and no install needed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

import invert4tvg  # noqa: F401  (torchvision shim before transformers, only on CPU builds)
from invert4tvg.data.frames import DecodedVideo, VideoSampling
from invert4tvg.data.sampling import plan_sampling
from invert4tvg.grpo import modelprep
from invert4tvg.grpo.loss import (
    LossConfig,
    aggregate,
    compute_advantages,
    loss_normalizer,
    per_token_loss,
)
from invert4tvg.modeling.architectures import published_config
from invert4tvg.policy.base import CompletionPolicy
from invert4tvg.policy.loading import prepare_for_training, upcast_trainable
from invert4tvg.policy.tiny_qwen import TinyModelSpec, build_processor, tiny_config, train_tokenizer
from invert4tvg.rollout.base import SamplingParams
from invert4tvg.rollout.hf import HFEngine
from invert4tvg.training import fsdp
from invert4tvg.training import memory_plan as mp

MODELS = {"3b": "Qwen/Qwen2.5-VL-3B-Instruct", "7b": "Qwen/Qwen2.5-VL-7B-Instruct"}
# The shipped recipes (recipes/configs/invert4tvg_qwen25vl_{3b,7b}.yaml).
RECIPE = dict(
    learning_rate=5e-5,
    num_generations=8,
    beta=0.04,
    loss_type="grpo",
    per_device_train_batch_size={"3b": 8, "7b": 4, "tiny": 8},  # completions per micro-batch (TRL's unit)
    max_grad_norm=1.0,
    max_completion_length=1024,
)
PROMPT = (
    "Find the start and end time of the event in the video: a person opens the door. Think first, then answer as "
    "<think>...</think> <answer>S to E</answer> in seconds."
)


class SmokePolicy(CompletionPolicy):
    """The base Policy's passes (prompt rendering, rollout requests, log-probs); the benchmark never reads answers."""

    def decode(self, completion, duration):
        return None

    def tvg_target(self, query, start, end, duration):
        return ""


def tokenizer_corpus() -> list[str]:
    answers = [
        f"<think>It happens here.</think> <answer>{i}.{i % 10}0 to {i + 3}.50</answer>" for i in range(60)
    ]
    return [PROMPT, *answers, *(str(i) for i in range(1000))]


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


def build(name: str, device: torch.device, dtype: torch.dtype):
    """Model (random weights, built in ``dtype`` on ``device``) and processor."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer = train_tokenizer(tokenizer_corpus(), 1024)
    processor = build_processor(tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")}
    if name == "tiny":
        config = tiny_config(tokenizer, TinyModelSpec())
    else:  # the published architecture, the special tokens at this tokenizer's ids
        vision_ids = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        tokens = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
        config = published_config(
            MODELS[name], {k: tokenizer.convert_tokens_to_ids(t) for k, t in zip(vision_ids, tokens)}
        )
    torch.manual_seed(0)  # every process builds the same weights (FSDP2 then keeps its shard)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model, processor, config


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plan_estimate(config, mode: str, cli, accelerator, video_tokens: int, prompt_tokens: int) -> float:
    """The memory plan's peak (bytes per GPU) for this run's model, mode and shapes."""
    lora = mode == "lora"
    shapes = mp.shapes_of(config, 64 if lora else 0, LORA_TARGETS)
    setup = mp.Setup(
        num_processes=accelerator.num_processes,
        fsdp=accelerator.num_processes > 1 and not lora,
        use_peft=lora,
        half_precision=accelerator.mixed_precision == "bf16",
        video_tokens=video_tokens,
        prompt_tokens=prompt_tokens,
        max_completion_length=cli.max_new_tokens,
        micro_batch=RECIPE["per_device_train_batch_size"][cli.model],
        accumulation=RECIPE["num_generations"] // RECIPE["per_device_train_batch_size"][cli.model],
        rollout_sequences=RECIPE["num_generations"],
    )
    return mp.plan(shapes, setup).peak


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def run_mode(mode: str, cli, accelerator, video) -> dict:
    device = accelerator.device
    compute = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, processor, config = build(cli.model, device, compute)
    lora = mode == "lora"
    sharded = accelerator.num_processes > 1 and not lora  # FSDP2 under torchrun; LoRA runs replicated (DDP)
    model_args = argparse.Namespace(
        freeze_vision_tower=True,
        gradient_checkpointing=True,
        use_peft=lora,
        lora_r=64,
        lora_alpha=128,
        lora_dropout=0.05,
        lora_target_modules=list(LORA_TARGETS),
    )
    model = upcast_trainable(prepare_for_training(model, model_args))
    modelprep.disable_dropout(model)
    modelprep.check_master_weights(model)
    ref_model = modelprep.build_reference(model, accelerator, sharded=sharded)
    if sharded:
        prepared = fsdp.shard(model, accelerator)
        if ref_model is not None:  # the meta skeleton, filled from the policy's shards
            ref_model = fsdp.shard_reference(ref_model, model, accelerator)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=RECIPE["learning_rate"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
    )
    if not sharded:
        prepared, optimizer = accelerator.prepare(model, optimizer)
    policy = SmokePolicy(model, processor)
    engine = HFEngine(model, processor, max_batch_sequences=RECIPE["num_generations"])
    fsdp.generate_gathered(engine, model)  # sharded: one all-gather per generate call
    g = RECIPE["num_generations"]
    micro_size = RECIPE["per_device_train_batch_size"][cli.model]
    loss_config = LossConfig(
        loss_type=RECIPE["loss_type"], beta=RECIPE["beta"], max_completion_length=cli.max_new_tokens
    )
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}]
    request = policy.rollout_request(messages, video, g)
    sampling = SamplingParams(temperature=1.0, max_tokens=cli.max_new_tokens)
    steps, step0_kl = [], None
    for step in range(cli.steps):
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
        micro = [list(range(i, min(i + micro_size, g))) for i in range(0, g, micro_size)]
        prepared.train()
        ref_logps = torch.zeros_like(mask)
        with torch.no_grad(), modelprep.reference_context(model, ref_model):
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
                if step == 0:  # the reference is the policy before its first update: KL must be 0
                    kl = torch.exp(ref_logps[rows] - logps) - (ref_logps[rows] - logps) - 1
                    step0_kl = max(step0_kl or 0.0, float((kl.detach() * m).abs().max()))
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
    video_tokens = int(batch.inputs["video_grid_thw"][0].prod()) // 4  # one row per sequence, the same video
    prompt_tokens = batch.inputs["input_ids"].shape[1] - batch.completion_ids.shape[1] - video_tokens
    planned = plan_estimate(config, mode, cli, accelerator, video_tokens, prompt_tokens)
    result = {
        "mode": mode + (f" (FSDP2 over {accelerator.num_processes})" if sharded else ""),
        "trainable_params_M": round(
            sum(p.numel() for p in params) * (accelerator.num_processes if sharded else 1) / 1e6, 1
        ),
        "video_tokens": video_tokens,
        "sequence_length": batch.inputs["input_ids"].shape[1],
        **{
            f"median_{k}_s": round(v, 3)
            for k, v in med.items()
            if k in ("rollout", "reference", "update", "step")
        },
        "rollout_tokens_per_s": round(med["generated_tokens"] / med["rollout"], 1),
        "trained_tokens_per_s": round(med["sequence_tokens"] / med["update"], 1),
        "first_step_s": round(steps[0]["step"], 3),
        "step0_kl_max": step0_kl,
        "peak_memory_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.type == "cuda"
        else None,
        "plan_peak_GiB": round(planned / 2**30, 2),
    }
    if not sharded:
        accelerator.free_memory(prepared, optimizer)
    del model, ref_model, policy, engine, prepared, optimizer, params
    return result


def main() -> None:
    from accelerate import Accelerator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", choices=sorted(MODELS), default="3b", help="published architecture to build"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="the tiny architecture on CPU (checks the script)"
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=RECIPE["max_completion_length"],
        help="default: the recipes' 1024",
    )
    parser.add_argument("--modes", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    parser.add_argument("--bf16-on-cpu", action="store_true", help="with --tiny: bf16 autocast on CPU too")
    parser.add_argument("--json", help="also write the results here")
    cli = parser.parse_args()
    if not cli.tiny and not torch.cuda.is_available():
        raise SystemExit(
            "gpu_smoke: no CUDA device visible (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}). Run it on a GPU machine, or pass --tiny for the CPU check of the script."
        )
    if cli.tiny:
        cli.model = "tiny"
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
        "processes": accelerator.num_processes,
        "model": "tiny Qwen2.5-VL architecture"
        if cli.tiny
        else f"{MODELS[cli.model]} architecture, random weights",
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
    main_process = accelerator.is_main_process
    if main_process:
        print(json.dumps(header, indent=2))
    results = []
    for mode in cli.modes:
        results.append(run_mode(mode, cli, accelerator, video))
        if main_process:
            print(json.dumps(results[-1], indent=2), flush=True)
    if cli.json and main_process:
        with open(cli.json, "w") as handle:
            json.dump({**header, "results": results}, handle, indent=2)
    accelerator.end_training()


if __name__ == "__main__":
    main()
