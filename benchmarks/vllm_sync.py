"""Weight-sync time of the vLLM engine per GB, on the real vLLM 0.32.0 (CPU build: run it in ``.venv-vllm``).

Builds a random Qwen2.5-VL of about 130 M parameters (the tiny model's tokenizer and vision tower, a 12-layer 1024-wide
language model), starts a ``VLLMEngine`` on it and times ``update_weights`` with every trainable tensor, streamed
from the trainer's fp32 parameters and converted to the served dtype bucket by bucket. Two ways a sync travels:

- ``process``: vLLM's default, the engine in a process of its own: each bucket packed into one byte string,
  msgpack'd, unpacked and loaded there;
- ``inprocess``: ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (the colocated engine): tensors by reference.

    VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python benchmarks/vllm_sync.py [--dtype bfloat16] [--repeats 3]

Prints one line per mode: GB sent (in the served dtype), seconds per sync (median), seconds per GB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(out: Path) -> Path:
    from invert4tvg.policy.tiny_qwen import TinyModelSpec, build_tiny_model

    spec = TinyModelSpec(
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=12,
        num_attention_heads=16,
        num_key_value_heads=2,
        mrope_section=(8, 12, 12),
    )
    return build_tiny_model(out, seed=0, spec=spec)


def measure(model_dir: str, dtype: str, repeats: int) -> None:
    import torch

    from invert4tvg.config import ModelArguments
    from invert4tvg.policy.loading import load_policy
    from invert4tvg.rollout.vllm_engine import VLLMEngine

    args = ModelArguments(model_name_or_path=model_dir, dtype="float32", freeze_vision_tower=False)
    policy = load_policy(args)
    engine = VLLMEngine(args, dtype=dtype, enforce_eager=True, max_model_len=2048)
    nbytes = sum(p.numel() for _, p in policy.named_weights_for_sync()) * engine.dtype.itemsize
    times = []
    for version in range(1, repeats + 1):
        with torch.no_grad():
            for p in policy.model.parameters():
                p.mul_(1.0001)  # new values each time
        start = time.perf_counter()
        engine.update_weights(policy.named_weights_for_sync(), version)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    mode = "inprocess" if engine.in_process else "process"
    print(
        f"{mode:9s} {dtype:8s} {nbytes / 1e9:.3f} GB  {median:.2f} s/sync (of {[round(t, 2) for t in times]})  "
        f"{median / (nbytes / 1e9):.2f} s/GB",
        flush=True,
    )
    engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="(internal) measure on this model directory")
    args = parser.parse_args()
    if args.model:
        measure(args.model, args.dtype, args.repeats)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = build(Path(tmp) / "model")
        for multiprocessing in ("1", "0"):  # one process per mode: vLLM reads the variable once
            env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": multiprocessing, "PYTHONPATH": str(ROOT)}
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            cmd = [sys.executable, __file__, "--model", str(model), "--dtype", args.dtype]
            subprocess.run([*cmd, "--repeats", str(args.repeats)], env=env, check=True)


if __name__ == "__main__":
    main()
