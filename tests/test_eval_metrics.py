"""Metric functions against hand-computed cases: thresholds and ties, parse failures, per-source, seeds."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from invert4tvg.eval.metrics import (
    IOU_TIE_TOLERANCE,
    accuracy,
    action_metrics,
    aggregate_metrics,
    aggregate_seeds,
    grounding_metrics,
    hits_threshold,
    mean_iou,
    metrics_from_predictions,
    per_source_metrics,
    recall_at,
    score_output,
)


def float_iou(pred: tuple[float, float], gt: tuple[float, float]) -> float:
    """IoU the way every TVG codebase computes it, in floats (kept here only to produce float ties)."""
    inter = max(0.0, min(pred[1], gt[1]) - max(pred[0], gt[0]))
    return inter / (max(pred[1], gt[1]) - min(pred[0], gt[0]))


def test_recall_hand_computed():
    ious = [0.9, 0.7, 0.65, 0.5, 0.31, 0.3, 0.1, 0.0]
    assert recall_at(ious, 0.3) == pytest.approx(100 * 6 / 8)
    assert recall_at(ious, 0.5) == pytest.approx(100 * 4 / 8)
    assert recall_at(ious, 0.7) == pytest.approx(100 * 2 / 8)
    # Time-R1's strict rule drops the samples sitting exactly on a threshold.
    assert recall_at(ious, 0.3, strict=True) == pytest.approx(100 * 5 / 8)
    assert recall_at(ious, 0.5, strict=True) == pytest.approx(100 * 3 / 8)
    assert recall_at(ious, 0.7, strict=True) == pytest.approx(100 * 1 / 8)
    assert mean_iou(ious) == pytest.approx(100 * sum(ious) / 8)


def test_ties_computed_in_floats_count_as_ties():
    # [1.3, 5.6] vs [2.4, 7.7]: IoU 3.2 / 6.4 = 0.5 exactly, but floats give 0.49999999999999994.
    below = float_iou((1.3, 5.6), (2.4, 7.7))
    assert below < 0.5
    assert hits_threshold(below, 0.5)
    assert not hits_threshold(below, 0.5, strict=True)
    # [0.1, 0.8] vs [0.1, 1.1]: IoU 0.7 exactly, floats give 0.7000000000000001.
    above = float_iou((0.1, 0.8), (0.1, 1.1))
    assert above > 0.7
    assert hits_threshold(above, 0.7)
    assert not hits_threshold(above, 0.7, strict=True)
    # [1.1, 1.4] vs [1.1, 2.1]: 0.3 exactly, floats give 0.2999999999999998.
    assert recall_at([float_iou((1.1, 1.4), (1.1, 2.1))], 0.3) == 100.0
    # Values genuinely next to the threshold are not ties.
    assert not hits_threshold(0.5 - 1e-6, 0.5)
    assert hits_threshold(0.5 + 1e-6, 0.5, strict=True)
    assert IOU_TIE_TOLERANCE < 1e-6


def test_parse_failures_score_zero_and_are_counted():
    m = grounding_metrics([0.8, None, 0.4, None])
    assert m["samples"] == 4
    assert m["parse_failures"] == 2
    assert m["R1@0.3"] == pytest.approx(50.0)
    assert m["R1@0.7"] == pytest.approx(25.0)
    assert m["mIoU"] == pytest.approx(100 * 1.2 / 4)
    # Explicit flags with IoU 0 (how predictions.jsonl stores a failure) give the same numbers.
    flagged = grounding_metrics([0.8, 0.0, 0.4, 0.0], parse_failures=[False, True, False, True])
    assert flagged == m
    # A zero IoU that parsed is not a failure.
    assert grounding_metrics([0.0, 0.5])["parse_failures"] == 0


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError, match="at least one"):
        recall_at([], 0.5)
    with pytest.raises(ValueError, match="sample 1"):
        mean_iou([0.2, 1.5])
    with pytest.raises(ValueError, match="sample 0"):
        recall_at([math.nan], 0.5)
    with pytest.raises(ValueError, match="parse failure but has IoU"):
        grounding_metrics([0.5], parse_failures=[True])
    with pytest.raises(ValueError, match="2 IoUs but 1"):
        grounding_metrics([0.5, 0.2], parse_failures=[False])


def test_per_source():
    ious = [1.0, 0.0, 0.6, None, 0.2]
    sources = ["charades", "charades", "anet", "anet", "anet"]
    by = per_source_metrics(ious, sources)
    assert list(by) == ["anet", "charades"]
    assert by["charades"]["R1@0.5"] == pytest.approx(50.0)
    assert by["charades"]["mIoU"] == pytest.approx(50.0)
    assert by["anet"]["samples"] == 3
    assert by["anet"]["parse_failures"] == 1
    assert by["anet"]["R1@0.5"] == pytest.approx(100 / 3)
    assert by["anet"]["mIoU"] == pytest.approx(100 * 0.8 / 3)


def test_action_accuracy():
    assert accuracy([1, 0, 1, None, 1]) == (pytest.approx(75.0), 4)
    assert accuracy([None, None]) == (None, 0)
    with pytest.raises(ValueError, match="sample 1"):
        accuracy([1, 2])
    m = action_metrics({"vc": [1, 1, 0], "ar": [0, 0]})
    assert m["VC"] == pytest.approx(200 / 3)
    assert m["AR"] == 0.0
    assert m["VD"] is None
    assert m["counts"] == {"vc": 3, "ar": 2, "vd": 0}
    with pytest.raises(ValueError, match="unknown action task"):
        action_metrics({"tvg": [1]})


def test_metrics_from_predictions():
    def row(i, source, pred, iou, tasks=None):
        return {"id": str(i), "source": source, "gt": [0, 10], "pred": pred, "iou": iou, "tasks": tasks or {}}

    rows = [
        row(0, "a", [0, 5], 0.5, {"vc": {"reward": 1}, "ar": {"reward": 0}}),
        row(1, "a", None, 0.0, {"vc": {"reward": 0}}),
        row(2, "b", [0, 8], 0.8, {"vd": {"reward": 1}}),
        row(3, "b", [20, 30], 0.0),
    ]
    m = metrics_from_predictions(rows)
    assert m["R1@0.3"] == m["R1@0.5"] == pytest.approx(50.0)
    assert m["R1@0.7"] == pytest.approx(25.0)
    assert m["mIoU"] == pytest.approx(100 * 1.3 / 4)
    assert (m["VC"], m["AR"], m["VD"]) == (pytest.approx(50.0), 0.0, 100.0)
    assert m["counts"] == {"samples": 4, "parse_failures": 1, "vc": 2, "ar": 1, "vd": 1}
    assert m["strict"] is False
    assert m["per_source"]["a"]["parse_failures"] == 1
    assert m["per_source"]["b"]["R1@0.7"] == pytest.approx(50.0)
    strict = metrics_from_predictions(rows, strict=True)
    assert strict["R1@0.5"] == pytest.approx(25.0)
    # One source: no breakdown.
    assert metrics_from_predictions(rows[:2])["per_source"] == {}
    with pytest.raises(ValueError, match="has a span but no IoU"):
        metrics_from_predictions([row(0, "a", [0, 1], None)])


def test_seed_aggregation():
    s = aggregate_seeds([40.0, 50.0, 60.0])
    assert (s.mean, s.std, s.n) == (pytest.approx(50.0), pytest.approx(10.0), 3)
    assert s.format() == "50.0 ± 10.0"
    one = aggregate_seeds([42.0, None])
    assert (one.mean, one.std, one.n) == (42.0, None, 1)
    assert one.format() == "42.0"
    assert aggregate_seeds([None]).format() == "–"
    agg = aggregate_metrics([{"R1@0.5": 10.0, "VC": None}, {"R1@0.5": 30.0, "VC": 80.0}])
    assert agg["R1@0.5"].mean == pytest.approx(20.0)
    assert agg["VC"].n == 1


@given(st.lists(st.one_of(st.none(), st.floats(0.0, 1.0)), min_size=1, max_size=50))
def test_recall_properties(ious):
    r3, r5, r7 = (recall_at(ious, m) for m in (0.3, 0.5, 0.7))
    assert 100.0 >= r3 >= r5 >= r7 >= 0.0
    for m in (0.3, 0.5, 0.7):
        assert recall_at(ious, m, strict=True) <= recall_at(ious, m)
    assert 0.0 <= mean_iou(ious) <= 100.0


def test_score_output_reads_answers_like_the_iou_reward():
    gt = (2.4, 7.7)
    assert score_output("<think>x</think><answer>1.3 to 5.6</answer>", gt)[0] == (1.3, 5.6)
    # The last <answer> block, the last "A to B" / "A and B" in it.
    pred, iou = score_output(
        "<answer>0 to 1</answer> <answer>from 0 to 3, or rather 2.4 and 7.7</answer>", gt
    )
    assert pred == (2.4, 7.7) and iou == pytest.approx(1.0)
    # Unparseable and reversed spans are parse failures with IoU 0.
    assert score_output("<think>no idea</think>", gt) == (None, 0.0)
    assert score_output("<answer>sometime</answer>", gt) == (None, 0.0)
    assert score_output("<answer>7.7 to 2.4</answer>", gt) == (None, 0.0)
    # A tie computed through the reward's IoU: 3.2 / 6.4 = 0.5 exactly, which floats put just under 0.5.
    _, tie = score_output("<answer>1.3 to 5.6</answer>", gt)
    assert tie != 0.5 and tie == pytest.approx(0.5)
    assert recall_at([tie], 0.5) == 100.0
    assert recall_at([tie], 0.5, strict=True) == 0.0
