"""Checkpoint files are never unpickled, their RNG states round-trip without pickle, damaged ones are recognised,
NaN weights are refused, and a full disk says so (issue 10, items 1, 4, 6 and 12)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from checkpoint_fixtures import write_malicious_pickle

from invert4tvg.training.checkpoint import (
    CheckpointError,
    _write_manifest,
    find_checkpoint,
    rng_state,
    safe_load,
    set_rng_state,
    verify_checkpoint,
)
from invert4tvg.training.disk import disk_guard
from invert4tvg.training.guards import NonFiniteError, check_parameters, nonfinite_parameters


def test_the_malicious_file_really_runs_code_when_unpickled(tmp_path):
    """The payload is live (so the refusal below means something): the old ``weights_only=False`` load ran it."""
    marker = tmp_path / "pwned"
    path = write_malicious_pickle(tmp_path / "scheduler.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_safe_load_refuses_a_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    path = write_malicious_pickle(tmp_path / "optimizer.pt", marker)
    with pytest.raises(CheckpointError, match="could run arbitrary code"):
        safe_load(path)
    assert not marker.exists()


def test_rng_states_round_trip_through_weights_only(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    set_rng_state(safe_load(tmp_path / "rng.pt"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def _fake_checkpoint(path, step):
    (path / "model").mkdir(parents=True)
    (path / "model/model.safetensors").write_bytes(b"x" * 100)
    torch.save({"state": {}, "param_groups": []}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text(json.dumps({"step": step}))
    _write_manifest(path)
    return path


def test_damage_is_recognised_and_latest_falls_back(tmp_path):
    root = tmp_path / "checkpoints"
    one, two = _fake_checkpoint(root / "step_1", 1), _fake_checkpoint(root / "step_2", 2)
    assert verify_checkpoint(two) is None
    with open(two / "model/model.safetensors", "r+b") as fh:
        fh.truncate(40)
    assert "model/model.safetensors has 40 bytes, 100 were written" in verify_checkpoint(two)
    assert find_checkpoint(tmp_path, "latest") == one
    (one / "trainer_state.json").unlink()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        find_checkpoint(tmp_path, "latest")


def test_non_finite_parameters_are_named():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert nonfinite_parameters(model) == []
    with torch.no_grad():
        model[1].bias[0] = float("nan")
    assert nonfinite_parameters(model) == ["1.bias"]
    with pytest.raises(
        NonFiniteError, match=r"1 parameter tensors hold NaN/inf after step 4 \(first: 1\.bias\)"
    ):
        check_parameters(model, 4, "/nonexistent")


def test_a_full_disk_is_reported_as_such(tmp_path):
    """``/dev/full`` fails every write with ENOSPC: what torch.save reports for it is a bare C++ stream error."""
    with pytest.raises(RuntimeError, match=r"basic_ios::clear|unexpected pos"):
        torch.save({"w": torch.zeros(1000)}, "/dev/full")
    full = r"no space left on device while writing checkpoint step_3 to /dev/full"
    with pytest.raises(OSError, match=full), disk_guard("/dev/full", "checkpoint step_3"):
        torch.save({"w": torch.zeros(1000)}, "/dev/full")
    with pytest.raises(ValueError, match="unrelated"), disk_guard(tmp_path, "x"):  # others pass unchanged
        raise ValueError("unrelated")
