"""The log-prob and update passes of one video-heavy GRPO group, shared prefix vs repeated prompts.

The tiny model, one prompt with a 32-frame 224x224 video (1,024 visual tokens) and G = 8 completions of 48 to 96
tokens. Times the rollout (HF generate, 16 new tokens per sample; one prefill per prompt vs the prompt repeated), the
old-policy and reference passes (no grad) and the update pass (forward + backward) in both layouts,
interleaved in one run (median of ``REPEATS``), then, each in a fresh process, the peak memory of the log-prob pass
with the tiny model's LM head widened to Qwen2.5-VL's 151,936-token vocabulary and completions of 256 to 320 tokens:
full-vocabulary logits for the micro-batch (the computation before invert4tvg.modeling.logprobs) vs chunked log-probs. Run through
``python benchmarks/grpo_step.py --video-heavy``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import invert4tvg  # noqa: F401  (torchvision shim before anything imports transformers)
from invert4tvg.config import ModelArguments
from invert4tvg.data.frames import DecodedVideo
from invert4tvg.modeling.shared_prefix import pack_groups
from invert4tvg.policy.loading import load_policy
from invert4tvg.policy.tiny_qwen import build_tiny_model
from invert4tvg.rollout.base import Completion, SamplingParams
from invert4tvg.rollout.hf import HFEngine

GROUP = 8
PARTS = ("rollout", "old", "ref", "update")
FRAMES, SIDE = 32, 224  # 16 temporal patches x (224 / 28)^2 merged tokens = 1,024 visual tokens
REPEATS = 3
ROLLOUT_TOKENS = (
    16  # new tokens per sample in the rollout timing: prefill dominates, as with real video prompts
)
QWEN_VOCAB = 151_936
MEMORY_LENGTHS = (256, 320)  # completions of the memory measurement: 8 x 320 positions, 1.5 GB of fp32 logits


def group_request(policy, rng: np.random.Generator):
    """The group's prompt: a random 32-frame video and a grounding question, G samples."""
    video = DecodedVideo(
        frames=rng.integers(0, 256, (FRAMES, SIDE, SIDE, 3), dtype=np.uint8),
        timestamps=np.arange(FRAMES) / 2.0,
        frame_indices=np.arange(FRAMES) * 15,
        source_fps=30.0,
        range_num_frames=FRAMES * 15,
        path="random.mp4",
    )
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "video"},
                {"type": "text", "text": "When does the person open the door? Answer with start and end."},
            ],
        }
    ]
    return policy.rollout_request(messages, video, GROUP)


def build_batch(policy, lengths: tuple[int, int] = (48, 96)):
    """The group's sequence batch: completions of random text tokens, lengths in ``lengths``."""
    rng = np.random.default_rng(0)
    request = group_request(policy, rng)
    suppress = set(policy.suppress_ids.tolist())
    allowed = [i for i in range(3, len(policy.processor.tokenizer)) if i not in suppress]
    sizes = rng.integers(lengths[0], lengths[1] + 1, GROUP)
    completions = [[Completion(rng.choice(allowed, n).tolist(), "", [0.0] * n, "stop", 0) for n in sizes]]
    return policy.sequence_batch([request], completions)


def full_logits_logprobs(policy, model, batch):
    """Log-probs the way they were computed before chunking: fp32 logits over the whole vocabulary, all at once."""
    width = batch.completion_ids.shape[1]
    logits = model(**batch.inputs, logits_to_keep=width + 1, use_cache=False).logits[:, :-1].float()
    logits[..., policy.suppress_ids] = float("-inf")
    chosen = logits.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def time_passes(policy, request, batches: dict) -> dict[str, dict[str, float]]:
    model = policy.model
    mask = batches["repeated"].completion_mask.float()

    def no_grad(batch):
        with torch.no_grad():
            policy.completion_logprobs(model, batch)

    def update(batch):
        (policy.completion_logprobs(model, batch) * mask).sum().backward()
        model.zero_grad(set_to_none=True)

    engines = {
        "repeated": HFEngine(model, policy.processor, prefill_once=False),
        "shared": HFEngine(model, policy.processor),
    }
    sampling = SamplingParams(temperature=1.0, max_tokens=ROLLOUT_TOKENS, seed=0)
    samples = {layout: {"rollout": [], "old": [], "ref": [], "update": []} for layout in batches}
    for _ in range(REPEATS):
        for layout, batch in batches.items():  # interleaved, so load on the machine hits both alike
            samples[layout]["rollout"].append(timed(engines[layout].generate, [request], sampling))
            samples[layout]["old"].append(timed(no_grad, batch))
            samples[layout]["ref"].append(timed(no_grad, batch))
            samples[layout]["update"].append(timed(update, batch))
    return {layout: {k: statistics.median(v) for k, v in parts.items()} for layout, parts in samples.items()}


def _peak_memory(model_dir: str, method: str, grad: bool, queue) -> None:
    """In a fresh process: how far one log-prob pass (with its backward when ``grad``) raises the RSS, in MiB."""
    torch.set_num_threads(1)
    policy = load_policy(ModelArguments(model_name_or_path=model_dir, freeze_vision_tower=False))
    policy.model.resize_token_embeddings(QWEN_VOCAB)
    batch = build_batch(policy, MEMORY_LENGTHS)
    before = _rss_mib()
    try:
        with torch.set_grad_enabled(grad):
            if method == "chunked":
                logps = policy.completion_logprobs(policy.model, batch)
            else:
                logps = full_logits_logprobs(policy, policy.model, batch)
            if grad:
                logps.sum().backward()
        queue.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before)
    except BaseException:
        queue.put(float("nan"))
        raise


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory(model_dir: str, method: str, grad: bool) -> float:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_peak_memory, args=(model_dir, method, grad, queue))
    process.start()
    value = queue.get()
    process.join()
    return value


def main(json_path: str | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(build_tiny_model(Path(tmp) / "tiny", seed=0))
        policy = load_policy(ModelArguments(model_name_or_path=model_dir, freeze_vision_tower=False))
        repeated = build_batch(policy)
        batches = {"repeated": repeated, "shared": pack_groups(repeated, GROUP, policy.model)}
        visual = int(repeated.inputs["video_grid_thw"][0].prod()) // 4
        prompt_len = repeated.inputs["input_ids"].shape[1] - repeated.completion_ids.shape[1]
        times = time_passes(policy, group_request(policy, np.random.default_rng(0)), batches)
        memory = {
            f"{method}_{'grad' if grad else 'no_grad'}": peak_memory(model_dir, method, grad)
            for grad in (False, True)
            for method in ("full_logits", "chunked")
        }
    width = repeated.completion_ids.shape[1]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}",
        "visual_tokens": visual,
        "prompt_tokens": prompt_len,
        "group": GROUP,
        "completion_width": width,
        "median_s": times,
        "speedup": {part: times["repeated"][part] / times["shared"][part] for part in PARTS}
        | {
            "old+ref+update": sum(times["repeated"][p] for p in PARTS[1:])
            / sum(times["shared"][p] for p in PARTS[1:])
        },
        "peak_mib": memory,
        "full_logits_mib": GROUP * MEMORY_LENGTHS[1] * QWEN_VOCAB * 4 / 2**20,
    }
    print(
        f"one group: {visual} visual tokens, prompt {prompt_len} tokens, G = {GROUP}, completions padded to {width}"
    )
    print(f"  {'pass':<8} {'repeated':>10} {'shared':>10} {'speedup':>8}")
    for part in PARTS:
        print(
            f"  {part:<8} {times['repeated'][part]:9.3f}s {times['shared'][part]:9.3f}s "
            f"{result['speedup'][part]:7.1f}x"
        )
    print(f"  old+ref+update together: {result['speedup']['old+ref+update']:.1f}x faster shared")
    print(
        f"log-prob pass peak memory at a {QWEN_VOCAB}-token vocabulary (full fp32 logits of the micro-batch: "
        f"{result['full_logits_mib']:.0f} MiB):"
    )
    for key, value in memory.items():
        print(f"  {key:<18} {value:8.0f} MiB")
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
