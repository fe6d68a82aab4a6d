"""Runs stopped by SIGTERM (what preemptible clusters send) or Ctrl-C (issue 10, item 7): the step finishes, a
checkpoint is written, and the last line says how to resume; on real tiny GRPO runs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from run_fixtures import FAST, REPO, grpo_args

from invert4tvg.training import stops
from invert4tvg.training.checkpoint import list_checkpoints
from invert4tvg.training.run_log import read_metrics
from invert4tvg.training.stops import RunInterrupted, StopSignals


# -- item 7: SIGTERM / SIGINT ---------------------------------------------------------------------------------
def test_sigterm_stops_the_run_with_a_checkpoint_and_a_resume_line(
    grpo, tiny_bench, tiny_model_dir, train_file, tmp_path
):
    """A real process and a real SIGTERM (what preemptible clusters send), then the resume the line advises."""
    out = tmp_path / "run"
    args = grpo_args(
        tiny_bench, train_file, tiny_model_dir, out, "--max_steps", "500", "--save_steps", "0", *FAST
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        [sys.executable, "recipes/grpo_qwen25vl.py", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not read_rows(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # wait for the first finished step
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    last = err.strip().splitlines()[-1]
    pattern = r"SIGTERM: stopped after step (\d+) with checkpoint \S+; to resume, run the same command with "
    assert re.match(
        pattern
        + r"--resume_from_checkpoint latest: python recipes/grpo_qwen25vl\.py .* --resume_from_checkpoint latest$",
        last,
    ), last
    step = int(re.match(pattern, last).group(1))
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == [f"step_{step}"]
    assert [r["step"] for r in read_metrics(out)] == list(range(1, step + 1))
    assert "Traceback" not in err
    resume = grpo_args(
        tiny_bench, train_file, tiny_model_dir, out, "--resume_from_checkpoint", "latest", *FAST
    )
    grpo.main([*resume, "--max_steps", str(step + 1), "--save_steps", "0"])
    assert [r["step"] for r in read_metrics(out)] == list(range(1, step + 2))


def test_ctrl_c_stops_after_the_step_with_a_checkpoint(
    grpo, tiny_bench, tiny_model_dir, train_file, tmp_path
):
    """SIGINT to this process while it trains (handlers live in the main thread, so the run stays in-process)."""
    out = tmp_path / "run"
    args = grpo_args(
        tiny_bench, train_file, tiny_model_dir, out, "--max_steps", "500", "--save_steps", "0", *FAST
    )

    def interrupt_after_first_step() -> None:
        deadline = time.monotonic() + 120
        while not read_rows(out) and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_first_step, daemon=True).start()
    with pytest.raises(RunInterrupted) as stopped:
        stops.run_main(grpo.main, args)  # as the command line runs it: closes the bar, prints the line
    assert stopped.value.code == 130 and stopped.value.step >= 1
    assert stopped.value.checkpoint == out / "checkpoints" / f"step_{stopped.value.step}"
    assert stopped.value.message.startswith(
        f"SIGINT: stopped after step {stopped.value.step} with checkpoint"
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def read_rows(run: Path) -> list[str]:
    path = run / "metrics.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def test_the_resume_line_replays_the_command_without_resume_or_overwrite(monkeypatch):
    argv = [
        "recipes/grpo_qwen25vl.py",
        "--config",
        "c.yaml",
        "--overwrite_output_dir",
        "true",
        "--resume_from_checkpoint=x",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    line = RunInterrupted(signal.SIGTERM, 3, Path("ckpt")).message
    assert line.endswith(": python recipes/grpo_qwen25vl.py --config c.yaml --resume_from_checkpoint latest")
    early = RunInterrupted(signal.SIGINT, 0, None)
    assert early.code == 130 and "--overwrite_output_dir true to start again" in early.message


def test_a_second_ctrl_c_aborts_at_once():
    with StopSignals() as handlers:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # the handler runs in this thread between bytecodes
        assert handlers.requested() == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
