"""What reading a head's hidden states costs in rollouts (the loc and meco heads, docs/heads.md).

The tiny model with the ``loc`` head, 2 prompts each with a 32-frame 224x224 video (1,024 visual tokens) and G = 8
samples of 16 new tokens. Times, interleaved in each round (median of ``--rounds``):

- ``generate``: HF generation of a request without a readout (what a text head's rollout costs);
- ``generate + readout``: the same request with the head's readout: the HF engine keeps the last layer's states
  (frame features from the prefill, the head tokens' states from the decoding steps) while generating;
- ``pass over finished sequences``: the no-grad forward the trainer runs for engines that return no hidden
  states (vLLM), over the same completions: one shared-prefix row per request;
- ``... repeated layout``: the same pass with the prompt repeated per answer (its fallback under attention that
  takes no 4-D mask, e.g. flash attention).

    .venv/bin/python benchmarks/head_readout.py [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import invert4tvg  # noqa: F401  (torchvision shim before anything imports transformers)
from invert4tvg.config import ModelArguments
from invert4tvg.policy import hidden
from invert4tvg.policy.loading import load_policy
from invert4tvg.policy.tiny_qwen import build_tiny_model
from invert4tvg.rollout.base import SamplingParams
from invert4tvg.rollout.hf import HFEngine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_passes import GROUP, group_request

PROMPTS, NEW_TOKENS = 2, 16


def requests(policy):
    """``PROMPTS`` groups as benchmarks/grpo_passes.py builds them: a random 32-frame 224x224 video, G samples."""
    rng = np.random.default_rng(0)
    return [group_request(policy, rng) for _ in range(PROMPTS)]


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "tiny", seed=0)
        policy = load_policy(
            ModelArguments(model_name_or_path=str(model_dir), head="loc", dtype="float32"), for_training=True
        )
    policy.model.eval()
    engine = HFEngine(policy.model, policy.processor)
    with_readout = requests(policy)
    without = [dataclasses.replace(r, readout=None) for r in with_readout]
    sampling = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, seed=0)
    times: dict[str, list[float]] = {
        "generate": [],
        "generate + readout": [],
        "pass over finished sequences": [],
        "... repeated layout": [],
    }
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        engine.generate(without, sampling)
        times["generate"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        completions = engine.generate(with_readout, sampling)
        times["generate + readout"].append(time.perf_counter() - t0)
        flat = [(i, c) for i, group in enumerate(completions) for c in group]
        t0 = time.perf_counter()
        policy.hidden_states(with_readout, flat)
        times["pass over finished sequences"].append(time.perf_counter() - t0)
        hidden.MASKABLE_ATTENTION, maskable = (), hidden.MASKABLE_ATTENTION
        t0 = time.perf_counter()
        policy.hidden_states(with_readout, flat)
        times["... repeated layout"].append(time.perf_counter() - t0)
        hidden.MASKABLE_ATTENTION = maskable
    medians = {k: statistics.median(v) for k, v in times.items()}
    base = medians["generate"]
    print(
        f"tiny model, loc head, {PROMPTS} prompts x G = {GROUP}, 1,024 visual tokens, {NEW_TOKENS} new tokens"
    )
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {torch.get_num_threads()}"
    )
    for name, value in medians.items():
        print(f"{name:32s} {value * 1000:8.1f} ms   {value / base:5.2f} x generate")
    if args.json:
        args.json.write_text(json.dumps({"median_s": medians, "rounds": times}, indent=1) + "\n")


if __name__ == "__main__":
    main()
