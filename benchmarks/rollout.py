"""Rollout throughput and weight-sync cost: in-process transformers vs Ray pools, full weights vs LoRA adapters.

1. Generated tokens per second on the tiny model (synthetic 56x56 videos, ``--prompts`` prompts x
   ``--generations`` samples, ``--max-tokens`` each, temperature 1) for the in-process ``hf`` engine and ``ray-hf``
   pools of 1 and 2 workers. Every round times every engine in turn, so machine load affects all alike.
2. ``RayEnginePool.update_weights`` on the tiny model with 2 workers: every trainable weight vs LoRA adapters.
3. The object-store path alone (``ray.put`` once, two workers fetch) for larger payloads, and what the
   payloads are for Qwen2.5-VL-3B/7B (parameter counts of models built on the meta device from their public
   dimensions), to put the tiny-model numbers in scale.

    .venv/bin/python benchmarks/rollout.py [--rounds 5] [--prompts 8] [--generations 8] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# The repository root first: this directory holds a rewards.py that would shadow the rewards package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import invert4tvg  # noqa: F401  (torchvision compat before anything else)
from invert4tvg.config import ModelArguments
from invert4tvg.data.frames import VideoSampling, VideoSpec
from invert4tvg.data.synthetic import SynthConfig, generate_benchmark
from invert4tvg.data.video import decode_video
from invert4tvg.policy.loading import load_policy
from invert4tvg.policy.tiny_qwen import build_tiny_model
from invert4tvg.rollout import cluster
from invert4tvg.rollout.base import SamplingParams
from invert4tvg.rollout.hf import HFEngine
from invert4tvg.rollout.ray_pool import RayEnginePool
from invert4tvg.rollout.weights import PackedWeights, pack_weights, payload_nbytes, unpack_weights
from invert4tvg.rollout.worker import EngineSpec

TINY_SAMPLING = VideoSampling(min_pixels=3136, total_pixels=200704)
MESSAGE = [
    {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "When does the circle grow?"}]}
]


def throughput(
    args: argparse.Namespace, model_args: ModelArguments, bench: Path
) -> list[tuple[str, float, float]]:
    policy = load_policy(model_args)
    paths = sorted((bench / "videos").glob("*.mp4"))[: args.prompts]
    videos = [decode_video(VideoSpec(str(p), None, TINY_SAMPLING)) for p in paths]
    requests = [policy.rollout_request(MESSAGE, v, args.generations, f"r{i}") for i, v in enumerate(videos)]
    weights = policy.weights_for_sync()

    def pool(workers: int, cpus: int) -> RayEnginePool:
        spec = EngineSpec(model=model_args, backend="hf")
        return RayEnginePool(spec, workers, initial_weights=weights, cpus_per_worker=cpus, seed=0)

    in_process = HFEngine(policy.model, policy.processor)
    engines = {
        "hf, in-process (2 threads)": in_process,
        "hf, in-process (1 thread)": in_process,
        "ray-hf, 1 worker x 1 CPU": pool(1, 1),
        "ray-hf, 1 worker x 2 CPUs": pool(1, 2),
        "ray-hf, 2 workers x 1 CPU": pool(2, 1),
    }
    timings: dict[str, list[tuple[float, int]]] = {name: [] for name in engines}
    for round_ in range(args.rounds + 1):  # round 0 warms every engine up and is not counted
        for name, engine in engines.items():
            sampling = SamplingParams(temperature=1.0, max_tokens=args.max_tokens, seed=round_)
            torch.set_num_threads(1 if "1 thread" in name else 2)
            start = time.perf_counter()
            out = engine.generate(requests, sampling)
            elapsed = time.perf_counter() - start
            torch.set_num_threads(2)
            if round_:
                timings[name].append((elapsed, sum(len(c.token_ids) for g in out for c in g)))
    rows = []
    for name, samples in timings.items():
        rates = [tokens / seconds for seconds, tokens in samples]
        rows.append((name, statistics.median(rates), min(rates)))
    for engine in set(engines.values()):
        engine.close()
    return rows


def sync_cost(args: argparse.Namespace, model_dir: Path) -> list[tuple[str, int, float, float]]:
    """Both pools up at once, timed alternately, so machine load affects both alike."""
    cases = {}
    for label, extra in (
        ("every trainable weight (tiny model, vision tower trained)", {}),
        ("LoRA adapters only (r=8 on the LM projections)", {"use_peft": True, "lora_r": 8, "lora_alpha": 16}),
    ):
        model_args = ModelArguments(
            model_name_or_path=str(model_dir), dtype="float32", freeze_vision_tower=False, **extra
        )
        policy = load_policy(model_args)
        pool = RayEnginePool(
            EngineSpec(model=model_args), 2, initial_weights=policy.weights_for_sync(), seed=0
        )
        cases[label] = (policy, pool, [])
    for version in range(1, 3 * args.rounds + 2):
        for policy, pool, seconds in cases.values():
            start = time.perf_counter()
            pool.update_weights(policy.weights_for_sync(), version)
            seconds.append(time.perf_counter() - start)
    rows = []
    for label, (policy, pool, seconds) in cases.items():
        pool.close()
        seconds = seconds[1:]  # the first sync warms the path up
        rows.append(
            (label, payload_nbytes(policy.weights_for_sync()), statistics.median(seconds), max(seconds))
        )
    return rows


def object_store(sizes_mb: list[int], rounds: int) -> list[tuple[int, float, float]]:
    """Seconds to put a payload once and have two workers fetch it and copy every tensor (as loading into a
    model does): pickled tensors vs the packed buffer the pool sends."""
    import ray

    @ray.remote(num_cpus=0)
    class Sink:
        def load(self, weights) -> int:
            tensors = unpack_weights(weights) if isinstance(weights, PackedWeights) else weights
            return sum(t.clone().numel() for t in tensors.values())

    sinks = [Sink.remote() for _ in range(2)]

    def once(payload_of) -> float:
        start = time.perf_counter()
        ref = ray.put(payload_of())
        ray.get([sink.load.remote(ref) for sink in sinks])
        return time.perf_counter() - start

    rows = []
    for size in sizes_mb:
        tensors = {f"w{i}": torch.randn(size * 2**20 // 4 // 16) for i in range(16)}
        pickled, packed = [], []
        for round_ in range(3 * rounds + 1):  # alternating; round 0 (workers importing the types) not counted
            a, b = once(lambda t=tensors: t), once(lambda t=tensors: pack_weights(t))
            if round_:
                pickled.append(a)
                packed.append(b)
        rows.append((size, statistics.median(pickled), statistics.median(packed)))
    for sink in sinks:
        ray.kill(sink)
    return rows


QWEN = {  # public config dimensions (text, vision) of the released checkpoints
    "Qwen2.5-VL-3B": dict(
        text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                  num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048),
    ),
    "Qwen2.5-VL-7B": dict(
        text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584),
    ),
}  # fmt: skip


def payload_sizes() -> list[tuple[str, float, float, float]]:
    """(model, total params, full-LM payload GB in bf16, LoRA r=64 payload GB in fp32), built on the meta device."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    defaults = ModelArguments()
    rows = []
    for name, dims in QWEN.items():
        text = {**dims["text"], "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24]}}
        config = Qwen2_5_VLConfig(
            text_config=text, vision_config=dims["vision"], tie_word_embeddings=text["tie_word_embeddings"]
        )
        with torch.device("meta"):
            model = Qwen2_5_VLForConditionalGeneration(config)
            total = sum(p.numel() for p in model.parameters())
            language = total - sum(p.numel() for p in model.model.visual.parameters())
            lora = LoraConfig(
                r=defaults.lora_r,
                lora_alpha=defaults.lora_alpha,
                target_modules=rf"^(?!.*visual).*\.({'|'.join(defaults.lora_target_modules)})$",
            )
            adapters = sum(
                p.numel() for n, p in get_peft_model(model, lora).named_parameters() if "lora_" in n
            )
        rows.append((name, total / 1e9, language * 2 / 1e9, adapters * 4 / 1e9))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--store-mb", type=int, nargs="*", default=[16, 128, 512])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"torch {torch.__version__}")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "tiny", seed=0)
        bench = generate_benchmark(
            Path(tmp) / "bench", args.prompts, seed=0, config=SynthConfig.preset("tiny"), progress=False
        )
        started = cluster.connect(None, num_cpus=6)  # logical CPUs: all pools stay up, one works at a time
        try:
            model_args = ModelArguments(
                model_name_or_path=str(model_dir), dtype="float32", freeze_vision_tower=False
            )
            print(
                f"\n## generation: {args.prompts} prompts x {args.generations} samples x {args.max_tokens} tokens"
            )
            print("| engine | tokens/s (median) | tokens/s (slowest round) |\n|---|---:|---:|")
            for name, median, slowest in throughput(args, model_args, bench):
                print(f"| {name} | {median:,.0f} | {slowest:,.0f} |")
            print("\n## weight sync, 2 workers (update_weights until every worker confirmed)")
            print("| payload | size | median | slowest |\n|---|---:|---:|---:|")
            for label, nbytes, median, slowest in sync_cost(args, model_dir):
                print(
                    f"| {label} | {nbytes / 2**20:.2f} MiB | {median * 1e3:.1f} ms | {slowest * 1e3:.1f} ms |"
                )
            print("\n## object store: put once, 2 workers fetch and copy (median; GiB of payload per second)")
            print("| payload | pickled tensors | packed buffer (the pool) |\n|---|---:|---:|")
            for size, pickled, packed in object_store(args.store_mb, args.rounds):
                print(
                    f"| {size} MiB | {pickled * 1e3:.0f} ms ({size / 1024 / pickled:.2f} GiB/s) | "
                    f"{packed * 1e3:.0f} ms ({size / 1024 / packed:.2f} GiB/s) |"
                )
        finally:
            cluster.shutdown(started)
    print(
        "\n## payload per sync for real models (full fine-tune of the LM in bf16 vs LoRA r=64 adapters in fp32)"
    )
    print("| model | parameters | full LM payload | LoRA payload | ratio |\n|---|---:|---:|---:|---:|")
    for name, total, full, lora in payload_sizes():
        print(f"| {name} | {total:.2f} B | {full:.2f} GB | {lora:.3f} GB | {full / lora:.0f}x |")


if __name__ == "__main__":
    main()
