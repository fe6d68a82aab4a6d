"""Paired bootstrap confidence intervals between settings (invert4tvg report's "Differences" tables)."""

from __future__ import annotations

import json
import random

import pytest

from invert4tvg.eval.bootstrap import paired_difference
from invert4tvg.eval.report import build_report
from tests.test_report import write_run


def test_a_constant_shift_is_estimated_exactly():
    a = {f"q{i}": float(i % 7) * 10 for i in range(300)}
    b = {q: v - 5.0 for q, v in a.items()}
    diff = paired_difference(a, b, "mIoU", resamples=500)
    assert diff.mean == pytest.approx(5.0)
    assert (diff.low, diff.high) == pytest.approx((5.0, 5.0))
    assert diff.resolved and diff.n == 300


def test_noise_alone_is_not_resolved_and_pairing_narrows_the_interval():
    rng = random.Random(0)
    hardness = {f"q{i}": rng.uniform(0, 100) for i in range(400)}  # most of the spread: which query it is
    a = {q: h + rng.gauss(0, 3) for q, h in hardness.items()}
    b = {q: h + rng.gauss(0, 3) for q, h in hardness.items()}
    diff = paired_difference(a, b, "mIoU")
    assert not diff.resolved
    assert diff.high - diff.low < 2.0  # an unpaired CI would be about 8 points wide here
    shifted = {q: v + 2.0 for q, v in a.items()}
    assert paired_difference(shifted, b, "mIoU").resolved


def test_only_shared_queries_are_compared():
    diff = paired_difference({"a": 10.0, "b": 20.0}, {"b": 0.0, "c": 5.0}, "VC", resamples=100)
    assert diff.n == 1 and diff.mean == 20.0
    assert paired_difference({"a": 1.0}, {"b": 1.0}, "VC") is None


def test_report_tables_differences_pooled_over_seeds(tmp_path):
    rng = random.Random(1)
    n = 200
    base = [rng.uniform(0.2, 0.9) for _ in range(n)]
    dirs = []
    for seed in (0, 1, 2):
        # Invert4TVG is 0.1 IoU better on every query; its VC is 1 on every query, Time-R1's on half.
        dirs.append(tmp_path / f"time_r1_{seed}")
        write_run(dirs[-1], "time_r1", seed, base, p=1.0, vc=[i % 2 for i in range(n)])
        dirs.append(tmp_path / f"invert4tvg_{seed}")
        ious = [min(1.0, v + 0.1) for v in base]
        write_run(dirs[-1], "invert4tvg", seed, ious, p=0.8, vc=[1] * n)
    report = build_report(dirs, tmp_path / "report", vis_items=0)
    text = report.markdown.read_text()
    assert "## Differences from time_r1" in text
    diffs = json.loads((tmp_path / "report" / "differences.json").read_text())
    inv = diffs["time_r1"]["invert4tvg"]
    assert inv["mIoU"]["mean"] == pytest.approx(100 * sum(min(1, v + 0.1) - v for v in base) / n)
    assert inv["mIoU"]["low"] > 0 and inv["mIoU"]["n"] == n
    assert inv["VC"]["mean"] == pytest.approx(50.0)
    section = text.split("## Differences from time_r1")[1]
    row = next(line for line in section.splitlines() if line.startswith("| invert4tvg"))
    assert "+50.0" in row and "*" in row


def test_a_named_reference_must_exist(tmp_path):
    dirs = []
    for setting in ("time_r1", "invert4tvg"):
        dirs.append(tmp_path / setting)
        write_run(dirs[-1], setting, 0, [0.5, 0.6, 0.7])
    with pytest.raises(ValueError, match="no setting named 'sft'"):
        build_report(dirs, tmp_path / "report", vis_items=0, references=["sft"])
