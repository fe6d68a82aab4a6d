"""``make compare``: the paper's Time-R1 vs Invert4TVG comparison and its task ablations, at laptop scale.

Every setting starts from the same warm start, trains with GRPO on a synthetic benchmark for the same number of
steps with the same batch, and is evaluated on the same test split (grounding + VC/AR/VD accuracy); each runs with
several seeds, and tracks VC/AR/VD on the validation split during training. The warm start itself is evaluated on
the test split too, so the report can say what RL changed. Runs are independent processes, a few at a time (one
torch thread each: on a 2-core machine two single-threaded runs finish sooner than one two-threaded run after the
other). A finished run is not redone, so an interrupted comparison continues where it stopped. The report goes
through ``invert4tvg report``, with paired bootstrap CIs against the warm start and against Time-R1.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from invert4tvg.eval.claims import claims_section, paper_claims
from invert4tvg.eval.runner import VALIDATION_KEYS
from invert4tvg.policy.tiny_qwen import build_tiny_model
from invert4tvg.workflows.demo import REPO, _args, _evaluate, _paths, ensure_benchmark, load_recipe

logger = logging.getLogger(__name__)

# The paper's Table 2 rows that a laptop can run: p = 1 is Time-R1 ("Only-TVG"); the others use p = 0.8.
SETTINGS: dict[str, dict[str, str]] = {
    "time_r1": {"--tvg_probability": "1.0", "--invert_tasks": "vc ar vd"},
    "invert4tvg": {"--tvg_probability": "0.8", "--invert_tasks": "vc ar vd"},
    "only_vc": {"--tvg_probability": "0.8", "--invert_tasks": "vc"},
    "only_ar": {"--tvg_probability": "0.8", "--invert_tasks": "ar"},
    "only_vd": {"--tvg_probability": "0.8", "--invert_tasks": "vd"},
}
WARM_START = "warm_start"


@dataclass(frozen=True)
class Testbed:
    """A benchmark preset with the warm-start (SFT) and GRPO configs that run on it."""

    preset: str
    sft_config: str
    grpo_config: str
    num_videos: int = 600
    # Extra warm-start flags; "{bench}" is the benchmark directory.
    sft_overrides: dict[str, str] = field(default_factory=dict)


TESTBEDS: dict[str, Testbed] = {
    # Where the paper's claim can show (docs/results/compare.md): one verb per action, two look-alike pairs per
    # video, and a warm start that knows actions and the answer format but was never trained on these queries.
    "lookalike": Testbed(
        "lookalike",
        "sft_lookalike_cpu.yaml",
        "lookalike_cpu.yaml",
        sft_overrides={"--grounding_annotations": "{bench}/train_ordinal.json"},
    ),
    # The demo's easy benchmark (grounding there needs no action understanding); kept to reproduce wave 1.
    "demo": Testbed("demo", "sft_tiny_cpu.yaml", "tiny_cpu.yaml"),
}


@dataclass(frozen=True)
class Run:
    setting: str
    seed: int
    out: Path

    @property
    def done(self) -> bool:
        return (self.out / "eval" / "metrics.json").exists()


def _grpo_command(run: Run, root: Path, steps: int, testbed: Testbed) -> list[str]:
    overrides = {
        **_paths(root),
        "--model_name_or_path": str(root / "sft" / "final"),
        "--output_dir": str(run.out),
        "--overwrite_output_dir": "true",  # a run not done is redone from scratch (its train.log is kept)
        "--setting": run.setting,
        "--run_name": f"{run.setting}_seed{run.seed}",
        "--seed": str(run.seed),
        "--max_steps": str(steps),
        "--save_steps": "0",
        "--report_to": "none",
    }
    args = _args(testbed.grpo_config, overrides, [])
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


def warm_start_key(root: Path, testbed: Testbed, overrides: dict[str, str]) -> dict[str, str]:
    """What a warm start depends on: its recipe (config file and overrides), the benchmark it trains on, and the
    code that builds it (every Python file of the package, the recipes and the rewards, but the command line, these
    workflows and evaluation, which only run or score it). A change to any of them builds it again."""

    code = hashlib.sha256()
    sources = sorted(
        p for folder in ("invert4tvg", "recipes", "rewards") for p in (REPO / folder).rglob("*.py")
    )
    for path in sources:
        name = path.relative_to(REPO).as_posix()
        if not name.startswith(("invert4tvg/commands/", "invert4tvg/workflows/", "invert4tvg/eval/")):
            code.update(name.encode() + b"\0" + path.read_bytes())
    config = (REPO / "recipes" / "configs" / testbed.sft_config).read_text()
    recipe = json.dumps({"config": config, "overrides": overrides}, sort_keys=True)
    return {
        "recipe": hashlib.sha256(recipe.encode()).hexdigest(),
        "benchmark": hashlib.sha256((root / "bench" / "metadata.json").read_bytes()).hexdigest(),
        "code": code.hexdigest(),
    }


def warm_start(root: Path, testbed: Testbed) -> Path:
    """Train (once) and evaluate on the test split (once) the warm start every setting starts from. It is kept in
    ``root/sft`` with its key (:func:`warm_start_key`) and reused while the key holds."""

    final, key_file = root / "sft" / "final", root / "sft" / "warm_start_key.json"
    evaluation = root / "eval" / WARM_START
    overrides = {
        **_paths(root),
        "--model_name_or_path": str(root / "tiny-model"),
        "--output_dir": str(root / "sft"),
        "--overwrite_output_dir": "true",
        "--report_to": "none",
    }
    overrides.update({k: v.format(bench=root / "bench") for k, v in testbed.sft_overrides.items()})
    portable = {k: v.replace(str(root), "ROOT").replace(str(REPO), "REPO") for k, v in overrides.items()}
    key = warm_start_key(root, testbed, portable)  # the same in every clone and output folder
    cached = json.loads(key_file.read_text()) if key_file.exists() and final.exists() else None
    if cached == key:
        logger.info("warm start: reusing %s (same recipe, benchmark and code)", final)
    else:
        changed = [k for k in key if cached and cached.get(k) != key[k]]
        logger.info(
            "warm start (SFT) shared by every setting: %s%s",
            testbed.sft_config,
            f" (rebuilt: the {' and '.join(changed)} changed)" if changed else "",
        )
        started = time.perf_counter()
        shutil.rmtree(evaluation, ignore_errors=True)
        build_tiny_model(root / "tiny-model", seed=0)
        load_recipe("sft_warmstart").main(_args(testbed.sft_config, overrides, []))
        key_file.write_text(json.dumps(key, indent=2) + "\n")
        (root / "sft" / "warm_start_seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
    if not (evaluation / "metrics.json").exists():
        logger.info("evaluating the warm start on the test split")
        grpo_args = _args(testbed.grpo_config, {**_paths(root), "--setting": WARM_START}, [])
        _evaluate(final, root, grpo_args, WARM_START, dataset=f"synthetic ({testbed.preset} preset)")
    return evaluation


def run_compare(
    out: str | Path = "runs/compare",
    report_dir: str | Path = "docs/results/compare",
    seeds: tuple[int, ...] = (0, 1, 2),
    settings: tuple[str, ...] = tuple(SETTINGS),
    steps: int = 300,
    jobs: int = 2,
    num_videos: int | None = None,
    testbed: str = "lookalike",
) -> Path:
    from invert4tvg.eval.report import build_report

    root = Path(out)
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {list(SETTINGS)}")
    if testbed not in TESTBEDS:
        raise ValueError(f"unknown testbed {testbed!r}; known: {list(TESTBEDS)}")
    bed = TESTBEDS[testbed]
    started = time.perf_counter()
    ensure_benchmark(root / "bench", num_videos or bed.num_videos, 0, bed.preset)
    warm = warm_start(root, bed)
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
        futures = [pool.submit(_launch, r, _grpo_command(r, root, steps, bed)) for r in todo]
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
    # Rebuilding the report only (every run already done) keeps the wall time of the invocation that trained them.
    summary = Path(report_dir) / "summary.json"
    trained_in = json.loads(summary.read_text()).get("wall_time_minutes") if summary.exists() else None
    references = [WARM_START] + (["time_r1"] if "time_r1" in settings else [])
    report = build_report(
        [warm, *(r.out for r in runs)],
        report_dir,
        title=f"Time-R1 vs Invert4TVG at laptop scale ({bed.preset} testbed)",
        references=references,
    )
    elapsed = (time.perf_counter() - started) / 60
    _add_claims(Path(report_dir), root, bed, elapsed if todo else trained_in)
    logger.info("comparison finished in %.1f min: %s", elapsed, report.markdown)
    return Path(report.markdown)


def _add_claims(report_dir: Path, root: Path, bed: Testbed, minutes: float | None) -> None:
    """The paper's three claims with their CIs, appended to ``report.md`` and kept in ``summary.json`` with the
    warm start's metrics, the number of test queries and the wall times (``minutes``: of the invocation that
    trained the runs; None when unknown)."""
    differences = report_dir / "differences.json"
    claims = paper_claims(json.loads(differences.read_text())) if differences.exists() else []
    warm = json.loads((root / "eval" / WARM_START / "metrics.json").read_text())
    seconds = root / "sft" / "warm_start_seconds.txt"
    summary_path = report_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary.update(
        {
            "testbed": bed.preset,
            "test_queries": warm["counts"]["samples"],
            "warm_start": {k: warm.get(k) for k in VALIDATION_KEYS},
            "claims": claims,
            "wall_time_minutes": round(minutes, 1) if minutes is not None else None,
            "warm_start_minutes": round(float(seconds.read_text()) / 60, 1) if seconds.exists() else None,
        }
    )
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    if claims:
        with (report_dir / "report.md").open("a") as fh:
            fh.write("\n" + "\n".join(claims_section(claims)) + "\n")
