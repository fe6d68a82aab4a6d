"""The heads of docs/heads.md side by side on the synthetic benchmark: the same SFT and GRPO budgets for each, several
seeds, evaluated on the test split after each stage. Writes ``OUT/summary.json`` and ``OUT/table.md`` (mean ± std
over seeds) for docs/results/heads.md.

    python scripts/compare_heads.py --out runs/heads --seeds 0 1 2

A seed draws the tiny model's initialisation, the data order and the sampling; the benchmark is the same for every
run. Runs go two at a time with one torch thread each (on the 2-core machine two single-threaded runs finish sooner
than one two-threaded run after the other). A stage whose output exists is not run again, so an interrupted
comparison continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"
HEADS = ["text_timestamps", "vtimellm", "frame_seg", "loc", "meco"]
METRICS = ["R1@0.3", "R1@0.5", "R1@0.7", "mIoU"]
ACTIONS = ["VC", "AR", "VD"]


def run(command: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with log.open("w") as out:
        if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode:
            raise RuntimeError(f"{' '.join(command)} failed: see {log}")


def one_run(
    root: Path, head: str, seed: int, sft_steps: int, grpo_steps: int, grpo_name: str = "grpo", grpo_extra=()
) -> Path:
    """Tiny model (seed) -> SFT with the head -> eval -> GRPO (``grpo_extra`` flags) -> eval, in
    ``root/head/seed_N`` (the GRPO stage in ``grpo_name/``)."""
    bench, out = root / "bench", root / head / f"seed_{seed}"
    out.mkdir(parents=True, exist_ok=True)
    model = root / f"tiny-model-{seed}"
    cli = [str(Path(sys.executable).parent / "invert4tvg")]
    data = ["--video_dir", str(bench / "videos"), "--frame_cache_dir", str(root / f"frame-cache-{seed}")]
    if not (out / "sft/final").is_dir():
        run(
            [sys.executable, "recipes/sft_warmstart.py", "--config", str(CONFIGS / "sft_heads_tiny_cpu.yaml"),
             "--head", head, "--model_name_or_path", str(model), "--train_annotations", str(bench / "train.json"),
             *data, "--output_dir", str(out / "sft"), "--overwrite_output_dir", "true", "--max_steps",
             str(sft_steps), "--seed", str(seed), "--report_to", "none"],
            out / "sft.log",
        )  # fmt: skip
    if not (out / "sft_eval/metrics.json").is_file():
        run(
            [*cli, "eval", "--model", str(out / "sft/final"), "--data", str(bench), "--split", "test", "--tasks", "",
             "--config", str(CONFIGS / "sft_heads_tiny_cpu.yaml"), "--out", str(out / "sft_eval"),
             "--max-new-tokens", "64"],
            out / "sft_eval.log",
        )  # fmt: skip
    if not (out / grpo_name / "eval/metrics.json").is_file():
        run(
            [sys.executable, "recipes/grpo_qwen25vl.py", "--config", str(CONFIGS / "tiny_cpu.yaml"),
             "--model_name_or_path", str(out / "sft/final"), "--prompt_templates",
             str(CONFIGS / "prompts/tiny_heads.yaml"), "--train_annotations", str(bench / "train.json"),
             "--val_annotations", "", "--test_annotations", str(bench / "test.json"), *data,
             "--output_dir", str(out / grpo_name), "--overwrite_output_dir", "true", "--max_steps",
             str(grpo_steps), "--seed", str(seed), "--save_steps", "0", "--report_to", "none", *grpo_extra],
            out / f"{grpo_name}.log",
        )  # fmt: skip
    return out


def summarise(root: Path, heads: list[str], seeds: list[int], grpo_name: str = "grpo") -> dict:
    summary: dict = {}
    for head in heads:
        for stage, file in (("sft", "sft_eval/metrics.json"), ("grpo", f"{grpo_name}/eval/metrics.json")):
            per_seed = [json.loads((root / head / f"seed_{s}" / file).read_text()) for s in seeds]
            row = {}
            for key in METRICS + (ACTIONS if stage == "grpo" else []):
                values = [m[key] for m in per_seed if m.get(key) is not None]
                if values:
                    row[key] = {
                        "mean": statistics.mean(values),
                        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                        "seeds": values,
                    }
            summary[f"{head}/{stage}"] = row
    return summary


def table(summary: dict, sft_steps: int, grpo_steps: int) -> str:
    columns = METRICS + ACTIONS
    lines = [
        "| head | stage | " + " | ".join(columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    for key, row in summary.items():
        head, stage = key.split("/")
        label = f"SFT {sft_steps}" if stage == "sft" else f"+ GRPO {grpo_steps}"
        cells = [f"{row[c]['mean']:.1f} ± {row[c]['std']:.1f}" if c in row else "-" for c in columns]
        lines.append(f"| {head} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/heads"))
    parser.add_argument("--heads", nargs="+", default=HEADS, choices=HEADS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--grpo-steps", type=int, default=40)
    parser.add_argument("--num-videos", type=int, default=600)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--grpo-name", default="grpo", help="directory of the GRPO stage (a variant of it)")
    parser.add_argument(
        "--grpo-extra", default="", help="extra GRPO flags, e.g. '--head_aux_loss_weight 1.0'"
    )
    args = parser.parse_args(argv)
    root = args.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    cli = str(Path(sys.executable).parent / "invert4tvg")
    if not (root / "bench/test.json").is_file():
        run([cli, "synth", "--out", str(root / "bench"), "--num-videos", str(args.num_videos), "--preset", "demo",
             "--overwrite"], root / "synth.log")  # fmt: skip
    for seed in args.seeds:
        if not (root / f"tiny-model-{seed}/config.json").is_file():
            run([cli, "tiny-model", "--out", str(root / f"tiny-model-{seed}"), "--seed", str(seed)],
                root / "tiny-model.log")  # fmt: skip
    started = time.time()
    jobs = [(head, seed) for seed in args.seeds for head in args.heads]
    with ThreadPoolExecutor(args.jobs) as pool:
        extra = args.grpo_extra.split()
        for done in pool.map(
            lambda job: one_run(root, *job, args.sft_steps, args.grpo_steps, args.grpo_name, extra), jobs
        ):
            print(f"[{time.time() - started:6.0f} s] done: {done.relative_to(root)}", flush=True)
    summary = summarise(root, args.heads, args.seeds, args.grpo_name)
    suffix = "" if args.grpo_name == "grpo" else f"_{args.grpo_name}"
    (root / f"summary{suffix}.json").write_text(json.dumps(summary, indent=1) + "\n")
    (root / f"table{suffix}.md").write_text(table(summary, args.sft_steps, args.grpo_steps))
    print(table(summary, args.sft_steps, args.grpo_steps))


if __name__ == "__main__":
    main()
