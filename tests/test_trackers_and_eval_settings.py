"""report_to checks and W&B settings; evaluation settings read from the training run; per-reward step metrics."""

from __future__ import annotations

import importlib.util
import json

import pytest

from invert4tvg.config import DataArguments, GRPOArguments, TaskArguments
from invert4tvg.config_checks import ConfigError
from invert4tvg.eval import settings
from invert4tvg.grpo.step_metrics import reward_metrics
from invert4tvg.training import trackers


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_requested_tracker_that_is_missing_is_an_error():
    with pytest.raises(
        ConfigError, match=r"report_to wandb: wandb is not installed \(pip install 'invert4tvg\[wandb\]'\)"
    ):
        GRPOArguments(report_to=["wandb"])
    with pytest.raises(ConfigError, match="unknown tracker 'mlflow'"):
        GRPOArguments(report_to=["mlflow"])
    assert GRPOArguments(report_to=["none"]).report_to == []


def test_wandb_project_entity_and_run_name(monkeypatch):
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    args = GRPOArguments(report_to=[], output_dir="runs/a", run_name="seed0")
    assert trackers.wandb_settings(args) == {"project": "invert4tvg", "name": "seed0", "dir": "runs/a"}
    monkeypatch.setenv("WANDB_PROJECT", "tvg")
    monkeypatch.setenv("WANDB_ENTITY", "lab")
    assert trackers.wandb_settings(args) == {
        "project": "tvg",
        "name": "seed0",
        "dir": "runs/a",
        "entity": "lab",
    }
    args.wandb_project, args.wandb_entity = "mine", "me"  # the config wins over the environment
    assert trackers.wandb_settings(args) == {
        "project": "mine",
        "name": "seed0",
        "dir": "runs/a",
        "entity": "me",
    }


def test_eval_settings_come_from_the_run_and_differences_are_named(tmp_path):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    trained = {
        "prompt_templates": "p.yaml",
        "video_fps": 1.0,
        "test_annotations": "t.json",
        "learning_rate": 1.0,
    }
    (run / "metadata.json").write_text(json.dumps({"config": trained}))
    found = settings.training_config(run / "final")
    assert found == (trained, run / "metadata.json")
    data, tasks = DataArguments(), TaskArguments()
    assert settings.differences(trained, data, tasks) == [
        "video_fps: 2.0 (training: 1.0)",
        "prompt_templates: None (training: 'p.yaml')",
    ]
    settings.apply(trained, data, tasks)
    assert (data.video_fps, data.test_annotations, tasks.prompt_templates) == (1.0, "t.json", "p.yaml")
    assert settings.differences(trained, data, tasks) == []
    assert settings.training_config(tmp_path / "elsewhere") is None


def test_every_reward_function_is_logged_with_mean_and_std_overall_and_per_task():
    components = {
        "iou": [0.5, 1.0, None, None],
        "span_inside_video": [1.0, 0.0, None, None],
        "vc": [None, None, 1, 0],
    }
    row = reward_metrics(components, ["tvg", "tvg", "vc", "vc"])
    assert row["rewards/iou/mean"] == 0.75 and row["rewards/iou/std"] == pytest.approx(0.3536, abs=1e-4)
    assert row["rewards/span_inside_video/tvg/mean"] == 0.5
    assert row["rewards/span_inside_video/vc/mean"] is None  # dropped from the logged row
    # A component that scores one task only gets no per-task key repeating its plain one (TRL-style names).
    assert row["rewards/vc/mean"] == 0.5 and "rewards/vc/vc/mean" not in row and "rewards/iou/tvg/mean" not in row


def test_report_labels_read_as_settings_not_internals(tmp_path):
    from invert4tvg.eval.runs import RunResult, group_runs

    meta = {"setting": "invert4tvg", "seed": 0, "p": 0.8, "invert_tasks": ["vc", "ar", "vd"], "model": "m"}
    validated = RunResult(tmp_path / "a", "run", dict(meta), {"mIoU": 1.0, "strict": None}, "metrics.jsonl")
    tested = RunResult(
        tmp_path / "b", "eval", {**meta, "split": "test"}, {"mIoU": 2.0, "strict": False}, "metrics.json"
    )
    strict = RunResult(
        tmp_path / "c", "eval", {**meta, "split": "test"}, {"mIoU": 3.0, "strict": True}, "metrics.json"
    )
    labels = sorted(g.label for g in group_runs([validated, tested, strict]))
    assert labels == [
        "invert4tvg [split=test, IoU > m]",
        "invert4tvg [split=test, IoU >= m]",
        "invert4tvg [validation during training]",
    ]
    assert not any("None" in label for label in labels)


def test_eval_metadata_names_the_training_run(tmp_path):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    meta = {"run_name": "r", "setting": "time_r1", "seed": 3, "p": 1.0, "invert_tasks": [], "config": {}}
    (run / "metadata.json").write_text(json.dumps(meta))
    assert settings.run_identity(run / "final") == {
        "run_name": "r",
        "setting": "time_r1",
        "seed": 3,
        "p": 1.0,
        "invert_tasks": [],
    }
