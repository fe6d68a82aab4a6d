"""Where a GRPO step's time goes on the tiny model: video decoding, rollout, reward, log-prob passes, update.

Runs the real recipe (recipes/grpo_qwen25vl.py with tiny_cpu.yaml) for a few steps on a small synthetic benchmark and
reads the per-step time split from the run's metrics.jsonl. The first step is reported apart (decoding cold, caches
empty). ``--video-heavy`` instead times the old-policy, reference and update passes of one video-heavy group
(benchmarks/grpo_passes.py): shared prefix vs repeated prompts, and the log-prob pass's peak memory. Usage:

    python benchmarks/grpo_step.py [--steps 12] [--backend hf] [--workers 2] [--json out.json]
    python benchmarks/grpo_step.py --video-heavy [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

import invert4tvg  # noqa: F401  (torchvision shim before anything imports transformers)
from invert4tvg.data.synthetic import SynthConfig, generate_benchmark
from invert4tvg.policy.tiny_qwen import build_tiny_model
from invert4tvg.workflows.demo import _args, _paths, load_recipe

PARTS = ("time/video", "time/rollout", "time/reward", "time/logprobs", "time/update", "time/step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--backend", default="hf")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("--video-heavy", action="store_true", help="time the passes of one video-heavy group")
    args = parser.parse_args()
    if args.video_heavy:
        from grpo_passes import main as passes

        return passes(args.json)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_benchmark(
            root / "bench", 40, 0, config=SynthConfig.preset("demo"), workers=1, progress=False
        )
        build_tiny_model(root / "tiny", seed=0)
        overrides = {
            **_paths(root),
            "--model_name_or_path": str(root / "tiny"),
            "--output_dir": str(root / "run"),
            "--max_steps": str(args.steps),
            "--val_annotations": "",
            "--test_annotations": "",
            "--save_steps": "0",
            "--report_to": "none",
            "--tvg_probability": "1.0",  # every step the same task, so steps are comparable
            "--rollout_backend": args.backend,
            "--rollout_workers": str(args.workers),
        }
        load_recipe("grpo_qwen25vl").main(_args("tiny_cpu.yaml", overrides, []))
        rows = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    warm = rows[1:]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "backend": args.backend if args.backend == "hf" else f"{args.backend} x{args.workers}",
        "steps": len(warm),
        "sequences_per_step": 4 * 8,
        "first_step_s": rows[0]["time/step"],
        "median_s": {part: statistics.median(r[part] for r in warm) for part in PARTS},
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in warm),
        "completion_len": statistics.median(r["completions/mean_length"] for r in warm),
    }
    step = result["median_s"]["time/step"]
    print(
        f"{result['backend']}: {len(warm)} steps after the first ({result['first_step_s']:.1f} s), "
        f"{result['sequences_per_step']} sequences per step"
    )
    for part in PARTS:
        value = result["median_s"][part]
        print(f"  {part:<14} {value:7.3f} s  {100 * value / step:5.1f}%")
    print(
        f"  rollout tokens/s {result['tokens_per_s']:.0f}, completion length {result['completion_len']:.1f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
