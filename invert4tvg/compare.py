"""``make compare``: the paper's Time-R1 vs Invert4TVG comparison and its task ablations, at laptop scale.

Every setting starts from the same SFT warm start, trains with GRPO on the synthetic benchmark for the same number
of steps with the same batch, and is evaluated on the same test split (grounding + VC/AR/VD accuracy); each runs with
several seeds. Runs are independent processes, a few at a time (one torch thread each: on a 2-core machine two
single-threaded runs finish sooner than one two-threaded run after the other). A finished run is not redone, so an
interrupted comparison continues where it stopped. The report goes through ``invert4tvg report``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from invert4tvg.demo import REPO, _args, _paths, ensure_benchmark, load_recipe

logger = logging.getLogger(__name__)

# The paper's Table 2 rows that a laptop can run: p = 1 is Time-R1 ("Only-TVG"); the others use p = 0.8.
SETTINGS: dict[str, dict[str, str]] = {
    "time_r1": {"--tvg_probability": "1.0", "--invert_tasks": "vc ar vd"},
    "invert4tvg": {"--tvg_probability": "0.8", "--invert_tasks": "vc ar vd"},
    "only_vc": {"--tvg_probability": "0.8", "--invert_tasks": "vc"},
    "only_ar": {"--tvg_probability": "0.8", "--invert_tasks": "ar"},
    "only_vd": {"--tvg_probability": "0.8", "--invert_tasks": "vd"},
}


@dataclass(frozen=True)
class Run:
    setting: str
    seed: int
    out: Path

    @property
    def done(self) -> bool:
        return (self.out / "eval" / "metrics.json").exists()


def _grpo_command(run: Run, root: Path, steps: int) -> list[str]:
    overrides = {
        **_paths(root),
        "--model_name_or_path": str(root / "sft" / "final"),
        "--output_dir": str(run.out),
        "--setting": run.setting,
        "--run_name": f"{run.setting}_seed{run.seed}",
        "--seed": str(run.seed),
        "--max_steps": str(steps),
        "--val_annotations": "",
        "--save_steps": "0",
        "--report_to": "none",
    }
    args = _args("tiny_cpu.yaml", overrides, [])
    for flag, value in SETTINGS[run.setting].items():
        args += [flag, *value.split()]
    return [sys.executable, str(REPO / "recipes" / "grpo_qwen25vl.py"), *args]


def _launch(run: Run, command: list[str]) -> tuple[Run, int, float]:
    run.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    with (run.out / "train.log").open("w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    return run, code, time.perf_counter() - started


def run_compare(
    out: str | Path = "runs/compare",
    report_dir: str | Path = "docs/results/compare",
    seeds: tuple[int, ...] = (0, 1, 2),
    settings: tuple[str, ...] = tuple(SETTINGS),
    steps: int = 200,
    jobs: int = 2,
    num_videos: int = 600,
) -> Path:
    from invert4tvg.eval.report import build_report
    from invert4tvg.policy.tiny_model import build_tiny_model

    root = Path(out)
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {list(SETTINGS)}")
    started = time.perf_counter()
    ensure_benchmark(root / "bench", num_videos, 0)
    if not (root / "sft" / "final").exists():
        logger.info("SFT warm start shared by every setting")
        build_tiny_model(root / "tiny-model", seed=0)
        load_recipe("sft_warmstart").main(
            _args(
                "sft_tiny_cpu.yaml",
                {
                    **_paths(root),
                    "--model_name_or_path": str(root / "tiny-model"),
                    "--output_dir": str(root / "sft"),
                },
                [],
            )
        )
    runs = [Run(s, seed, root / "runs" / f"{s}_seed{seed}") for seed in seeds for s in settings]
    todo = [r for r in runs if not r.done]
    logger.info(
        "%d GRPO runs (%d already done), %d at a time, %d steps each",
        len(runs),
        len(runs) - len(todo),
        jobs,
        steps,
    )
    failed = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_launch, r, _grpo_command(r, root, steps)) for r in todo]
        for i, future in enumerate(futures, 1):
            run, code, seconds = future.result()
            status = "ok" if code == 0 and run.done else f"FAILED (exit {code}, see {run.out / 'train.log'})"
            logger.info(
                "[%d/%d] %s seed %d: %s in %.0f s", i, len(todo), run.setting, run.seed, status, seconds
            )
            if status != "ok":
                failed.append(run)
    if failed:
        raise RuntimeError(f"{len(failed)} runs failed: " + ", ".join(str(r.out) for r in failed))
    report = build_report([r.out for r in runs], report_dir, title="Time-R1 vs Invert4TVG at laptop scale")
    logger.info("comparison finished in %.1f min: %s", (time.perf_counter() - started) / 60, report.markdown)
    return Path(report.markdown)
