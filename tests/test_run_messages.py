"""What a user reads: `invert4tvg eval`'s default output folder and summary line, and the lines that open and
close a training run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "invert4tvg.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )


def test_eval_writes_next_to_the_model_and_says_how_many_answers_did_not_parse(
    tiny_model_dir, tiny_bench, tmp_path
):
    final = tmp_path / "run" / "final"
    shutil.copytree(tiny_model_dir, final)  # an untrained model: its answers do not parse
    result = cli(
        "eval", "--model", str(final), "--data", str(tiny_bench), "--config", "recipes/configs/tiny_cpu.yaml",
        "--split", "val", "--tasks", "", "--max-samples", "3", "--max-new-tokens", "8",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "run" / "eval-val"  # no --out: next to the model, beside the run's own eval/
    metrics = json.loads((out / "metrics.json").read_text())
    failed, samples = metrics["counts"]["parse_failures"], metrics["counts"]["samples"]
    assert failed == samples > 0 and metrics["mIoU"] == 0.0
    summary = result.stdout.splitlines()[0]
    assert f"{failed} of {samples} answers did not parse (IoU 0)" in summary, summary
    assert re.match(r"R1@0\.3=0\.0 R1@0\.5=0\.0 R1@0\.7=0\.0 mIoU=0\.0 \(", summary), summary
    assert str(out) in result.stdout
    # every number a person reads is rounded: no 26.666666666666668, in the summary or in the log lines
    assert not re.search(r"\d\.\d{4,}", result.stdout + result.stderr), result.stdout + result.stderr


def test_summary_line_rounds_and_counts():
    from invert4tvg.eval.metrics import summary_line

    metrics = {
        "R1@0.3": 26.666666666666668,
        "R1@0.5": 10.0,
        "R1@0.7": 0.0,
        "mIoU": 20.123456,
        "VC": None,
        "parser": "answer",
        "counts": {"samples": 60, "parse_failures": 0, "gt_past_video_end": 2},
    }
    line = summary_line(metrics)
    assert line.startswith("R1@0.3=26.7 R1@0.5=10.0 R1@0.7=0.0 mIoU=20.1 (parser answer, 60 queries, ")
    assert "did not parse" not in line and "2 ground-truth spans past the video's end" in line
