"""``make demo``: the whole method end to end on a laptop CPU.

Generates the synthetic benchmark, builds the tiny offline Qwen2.5-VL, warm-starts it with SFT, trains it with GRPO
(p = 0.8, all three inversion tasks), evaluates the untrained model, the whole-video baseline, the SFT and the GRPO
checkpoints on the held-out test split, prints a table and writes ``OUT/summary.json``. The training stages run the
repository's recipes (``recipes/sft_warmstart.py``, ``recipes/grpo_qwen25vl.py``) with their embedded default
configs, so the demo exercises exactly what users launch.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from invert4tvg.builders import build_engine, frame_cache, load_split, load_templates
from invert4tvg.config import DataArguments, GRPOArguments, ModelArguments, TaskArguments, parse_config
from invert4tvg.data.formats import load_records
from invert4tvg.data.synthetic import SynthConfig, generate_benchmark
from invert4tvg.eval.runner import evaluate, whole_video_metrics
from invert4tvg.policy.loading import load_policy
from invert4tvg.policy.tiny_qwen import build_tiny_model
from invert4tvg.workflows.recipe_loader import load_recipe

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
GROUNDING_KEYS = ("R1@0.3", "R1@0.5", "R1@0.7", "mIoU")


def ensure_benchmark(bench: Path, num_videos: int, seed: int, preset: str = "demo") -> None:
    """Generate the ``preset`` benchmark into ``bench`` unless the same one (preset, size, seed) is already there."""

    config = SynthConfig.preset(preset)
    meta_path = bench / "metadata.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        same = (meta.get("num_videos"), meta.get("seed")) == (num_videos, seed)
        same = same and (bench / "train_ordinal.json").exists()  # written since generator version 3
        if same and SynthConfig.from_dict(meta.get("config", {})) == config:
            logger.info("synthetic benchmark: reusing %s", bench)
            return
        logger.info("synthetic benchmark in %s was made with other settings: regenerating", bench)
    logger.info("synthetic benchmark: %d videos -> %s", num_videos, bench)
    generate_benchmark(bench, num_videos, seed, config=config, overwrite=True)


def _paths(out: Path) -> dict[str, str]:
    """Every file a tiny config names, under ``out`` (the configs' relative paths assume the repository root)."""
    bench = out / "bench"
    return {
        "--prompt_templates": str(REPO / "recipes" / "configs" / "prompts" / "tiny.yaml"),
        "--train_annotations": str(bench / "train.json"),
        "--val_annotations": str(bench / "val.json"),
        "--test_annotations": str(bench / "test.json"),
        "--video_dir": str(bench / "videos"),
        "--frame_cache_dir": str(out / "frame-cache"),
    }


def _args(config: str, overrides: dict[str, str], extra: list[str]) -> list[str]:
    flat = [x for pair in overrides.items() for x in pair]
    return ["--config", str(REPO / "recipes" / "configs" / config), *flat, *extra]


def _evaluate(
    model_dir: Path, out: Path, grpo_args: list[str], name: str, dataset: str = "synthetic (demo preset)"
) -> dict[str, Any]:
    model_args, data_args, task_args, args = parse_config(
        (ModelArguments, DataArguments, TaskArguments, GRPOArguments), grpo_args
    )
    model_args.model_name_or_path = str(model_dir)
    policy = load_policy(model_args, for_training=False)
    engine = build_engine("hf", policy, args.rollout_batch_sequences)
    return evaluate(
        policy,
        engine,
        load_split(data_args, "test"),
        out / "eval" / name,
        video_sampling=data_args.sampling(),
        templates=load_templates(task_args),
        max_tokens=args.max_completion_length,
        frame_cache=frame_cache(data_args),
        metadata={
            "model": str(model_dir),
            "setting": name,
            "dataset": dataset,
            "split": "test",
        },
    )


def run_demo(
    out: str | Path = "runs/demo",
    num_videos: int = 600,
    seed: int = 0,
    extra_grpo: list[str] | None = None,
    sft_steps: int | None = None,
    grpo_steps: int | None = None,
) -> dict:
    """Run every stage; ``sft_steps`` / ``grpo_steps`` override the configs' budgets (tests use tiny ones)."""

    out = Path(out)
    started = time.perf_counter()
    bench = out / "bench"
    logger.info("[1/5] synthetic benchmark")
    ensure_benchmark(bench, num_videos, seed)
    tiny = out / "tiny-model"
    logger.info("[2/5] tiny Qwen2.5-VL -> %s", tiny)
    build_tiny_model(tiny, seed=seed)

    paths = _paths(out)
    logger.info("[3/5] SFT warm start")
    # Every stage is redone from scratch: replace what a previous demo left in its run directories.
    sft = {
        **paths,
        "--model_name_or_path": str(tiny),
        "--output_dir": str(out / "sft"),
        "--overwrite_output_dir": "true",
        "--seed": str(seed),  # one seed for the benchmark, the model's init and both training stages
    }
    if sft_steps is not None:
        sft["--max_steps"] = str(sft_steps)
    load_recipe("sft_warmstart").main(_args("sft_tiny_cpu.yaml", sft, []))
    logger.info("[4/5] GRPO (p = 0.8, VC/AR/VD)")
    grpo = {
        **paths,
        "--model_name_or_path": str(out / "sft" / "final"),
        "--output_dir": str(out / "grpo"),
        "--overwrite_output_dir": "true",
        "--seed": str(seed),
    }
    if grpo_steps is not None:
        grpo["--max_steps"] = str(grpo_steps)
    grpo_args = _args("tiny_cpu.yaml", grpo, list(extra_grpo or []))
    load_recipe("grpo_qwen25vl").main([*grpo_args, "--test_annotations", ""])

    logger.info("[5/5] evaluation on the test split")
    results = {
        "untrained": _evaluate(tiny, out, grpo_args, "untrained"),
        "sft": _evaluate(out / "sft" / "final", out, grpo_args, "sft"),
        "grpo": _evaluate(out / "grpo" / "final", out, grpo_args, "grpo"),
    }

    test = load_records("tvg-json", bench / "test.json", video_dir=bench / "videos").records
    summary = {
        "untrained": {k: results["untrained"][k] for k in GROUNDING_KEYS},
        "whole_video": {k: whole_video_metrics(test)[k] for k in GROUNDING_KEYS},
        "sft": {k: results["sft"][k] for k in GROUNDING_KEYS},
        "grpo": {k: results["grpo"][k] for k in GROUNDING_KEYS},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_table(summary, results, len(test), time.perf_counter() - started))
    return summary


def format_table(summary: dict, results: dict, n_test: int, seconds: float) -> str:
    rows = [f"Temporal grounding on the synthetic test split ({n_test} queries), percent:", ""]
    header = f"{'model':<12}" + "".join(f"{k:>9}" for k in (*GROUNDING_KEYS, "VC", "AR", "VD"))
    rows += [header, "-" * len(header)]
    for name, metrics in summary.items():
        action = results.get(name, {})
        cells = [f"{metrics[k]:9.1f}" for k in GROUNDING_KEYS]
        cells += [
            f"{action[k]:9.1f}" if action.get(k) is not None else f"{'-':>9}" for k in ("VC", "AR", "VD")
        ]
        rows.append(f"{name:<12}" + "".join(cells))
    rows += ["", f"demo finished in {seconds / 60:.1f} min"]
    return "\n".join(rows)
