"""Two training processes on CPU (gloo, ``torchrun --nproc_per_node 2``): what only shows with more than one process.

- a 2-process update equals a 1-process update of the same global batch (loss and gradients), with the ``dapo``
  normaliser over processes whose token counts differ and several micro-batches per process (``no_sync``);
- the recipe survives an uneven last batch and a process whose whole share fails to decode, keeps the linear LR
  schedule at its length, logs the whole global batch, and resumes exactly from a mid-run checkpoint;
- a head's own module (loc), used outside the model's forward, trains in SFT and GRPO and resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_grpo_training import TIMING_KEYS, recipe_args, subset

from invert4tvg.data.formats import load_records
from invert4tvg.training.stream import BatchStream

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")
TIMEOUT_S = 300  # a hang (a process left out of a collective) fails the test instead of blocking CI


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["ACCELERATE_USE_CPU"] = (
        "true"  # accelerate runs gloo on CPU only when told to (accelerate launch --cpu)
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        str(WORKER),
        *args,
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, (
        f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    )
    return done


def test_two_processes_compute_the_one_process_update(tiny_model_dir, tiny_bench, tmp_path):
    import distributed_worker
    from accelerate import Accelerator

    torchrun(
        2, "update", "--model", str(tiny_model_dir), "--bench", str(tiny_bench), "--out", str(tmp_path / "2")
    )
    two = json.loads((tmp_path / "2/stats.json").read_text())
    two_grads = torch.load(tmp_path / "2/grads.pt", weights_only=True)
    one = distributed_worker.run(
        str(tiny_model_dir), str(tiny_bench), str(tmp_path / "1"), "dapo", Accelerator(cpu=True)
    )
    assert two["world"] == 2 and one["world"] == 1
    # The lengths make the processes' token counts differ (dapo must divide by the global count).
    lengths = distributed_worker.completion_lengths(8)
    assert sum(lengths[:4]) != sum(lengths[4:])
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5, abs=1e-7)
    assert abs(one["loss"]) > 1e-3
    assert two_grads.keys() == one["grads"].keys() and two_grads
    for name, grad in one["grads"].items():
        torch.testing.assert_close(two_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def broken_video_dir(bench: Path, out: Path, broken: set[str]) -> Path:
    """The benchmark's videos, with the named ones replaced by bytes no decoder reads."""
    out.mkdir()
    for video in (bench / "videos").iterdir():
        if video.name in broken:
            (out / video.name).write_bytes(b"not a video" * 100)
        else:
            (out / video.name).symlink_to(video)
    return out


def test_two_process_recipe_uneven_batches_bad_videos_schedule_and_resume(
    tiny_model_dir, tiny_bench, tmp_path
):
    train = subset(
        tiny_bench, tmp_path / "train9.json", 9
    )  # 9 records, 2 x 2 per step: the 3rd batch is uneven
    records = load_records("tvg-json", train, video_dir=tiny_bench / "videos").records
    rank1_first = BatchStream(records, 2, seed=0, num_processes=2, process_index=1).next_batch()
    rank0_first = BatchStream(records, 2, seed=0, num_processes=2, process_index=0).next_batch()
    broken = {Path(r.video).name for r in rank1_first}  # process 1's whole first share fails to decode
    assert {Path(r.video).name for r in rank0_first} - broken, "process 0 must keep a readable video"
    videos = broken_video_dir(tiny_bench, tmp_path / "videos", broken)
    common = [
        "--per_device_train_batch_size",  # completions: 2 videos x 4 (TRL's unit)
        "8",
        "--max_steps",
        "4",
        "--lr_scheduler_type",
        "linear",
        "--learning_rate",
        "1e-4",
        "--video_dir",
        str(videos),
        "--frame_cache_dir",
        "",
        "--max_bad_video_fraction",
        "0.7",  # 2 of the 3 videos are broken: at 0.5 the run would rightly stop at once (certain to exceed)
        "--verb_mask",
        "one",
        "--tvg_probability",
        "0.5",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = recipe_args(tiny_bench, train, tiny_model_dir, straight)
    torchrun(2, "recipe", *args, *common, "--save_steps", "2")
    args = recipe_args(tiny_bench, train, tiny_model_dir, resumed)
    torchrun(2, "recipe", *args, *common, "--resume_from_checkpoint", str(straight / "checkpoints/step_2"))

    def rows(run: Path) -> dict[int, dict]:
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: {k: v for k, v in r.items() if not k.startswith(TIMING_KEYS)} for r in lines}

    logged = rows(straight)
    assert sorted(logged) == [1, 2, 3, 4]  # every step ran on both processes, the uneven third one included
    assert logged[1]["bad_videos"] == len(broken)  # both processes count the same failures
    assert logged[3]["epoch"] == pytest.approx(1.0) and logged[4]["epoch"] > 1.0
    # linear decay over 4 updates, stepped once per update (not once per process)
    for step in range(1, 5):
        assert logged[step]["learning_rate"] == pytest.approx(1e-4 * (4 - step) / 4, abs=1e-12)
    # the log describes the global batch: 2 processes x 2 videos x 4 completions
    assert all(r["sequences"] == 16 for r in logged.values())

    a = load_file(straight / "final/model.safetensors")
    b = load_file(resumed / "final/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    resumed_rows = rows(resumed)
    assert sorted(resumed_rows) == [3, 4]
    for step in (3, 4):
        assert resumed_rows[step] == logged[step]
    shutil.rmtree(tmp_path / "videos")


def test_two_process_sft_and_grpo_train_a_heads_module(tiny_model_dir, tiny_bench, tmp_path):
    """The loc head's module runs outside the model's forward: DDP must still all-reduce its gradients, in SFT (a
    step whose process holds only inversion examples included) and in GRPO (the auxiliary head loss), and a resumed
    SFT run must end with the same module."""
    train = subset(tiny_bench, tmp_path / "train8.json", 8)
    common = [
        "--config", str(REPO / "recipes/configs/sft_heads_tiny_cpu.yaml"),
        "--head", "loc", "--head_width", "16",
        "--model_name_or_path", str(tiny_model_dir),
        "--train_annotations", str(train),
        "--video_dir", str(tiny_bench / "videos"),
        "--frame_cache_dir", "",
        "--per_device_train_batch_size", "2",
        "--invert_sft_fraction", "0.25",
        "--learning_rate", "3e-3",
        "--max_steps", "16",
        "--report_to", "none",
    ]  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    torchrun(2, "sft", *common, "--output_dir", str(straight), "--save_steps", "8")
    torchrun(
        2, "sft", *common, "--output_dir", str(resumed),
        "--resume_from_checkpoint", str(straight / "checkpoints/step_8"),
    )  # fmt: skip
    rows = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/giou" in r for r in rows), rows  # the head's loss reached the log
    start = load_file(straight / "checkpoints/step_8/model/invert4tvg_head.safetensors")
    a = load_file(straight / "final/invert4tvg_head.safetensors")
    b = load_file(resumed / "final/invert4tvg_head.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], start[k]) for k in a)  # steps 9 to 16 trained it

    # GRPO from it on 2 processes: the head's loss stays on as an auxiliary term and its module trains
    # (DDP all-reduces its gradients like the model's)
    grpo = tmp_path / "grpo"
    args = recipe_args(tiny_bench, train, straight / "final", grpo)
    args += ["--prompt_templates", str(REPO / "recipes/configs/prompts/tiny_heads.yaml")]
    args += ["--per_device_train_batch_size", "8", "--max_steps", "2", "--tvg_probability", "1.0"]
    args += ["--max_completion_length", "12", "--save_steps", "0", "--frame_cache_dir", ""]
    torchrun(2, "recipe", *args)
    rows = [json.loads(x) for x in (grpo / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and any(r["head_loss"] > 0 for r in rows), rows
    after = load_file(grpo / "final/invert4tvg_head.safetensors")
    assert not all(torch.equal(a[k], after[k]) for k in a)
