"""The README's quick start, then every other shell block marked runnable in README.md and docs/*.md, run as
written in a copy of the repository's files (what a fresh clone holds).

A runnable block is fenced as ```` ```bash runnable ````. The commands are read from the documents, so the test fails
when the docs and the code part. They run at toy size: each command gets the overrides in :data:`TOY` for its kind
appended (the command line's last value wins), and the environment lines (`python -m venv`, activation,
`pip install`) are skipped: the package under test is imported from the copy through PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Appended to the README's commands so the whole quick start takes well under a minute here.
TOY = {
    "synth": ["--num-videos", "12"],
    "train": ["--max_steps", "3"],  # keeps the config's report_to: [tensorboard]
    "eval": ["--max-samples", "4"],
    "launch": [
        "--max_steps", "2", "--per_device_train_batch_size", "4", "--num_generations", "2",
        "--max_completion_length", "16", "--report_to", "none",
    ],
}  # fmt: skip


def block_commands(block: str) -> list[list[str]]:
    """A shell block's commands (continuation lines joined), without the environment setup lines."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words and words[:2] != ["pip", "install"] and words[:3] != ["python", "-m", "venv"]:
            commands.append(words)
    return commands


def readme_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    block = re.search(
        r"<!-- quick-start[^>]*-->\s*```bash[^\n]*\n(.*?)```\s*<!-- /quick-start -->", text, re.S
    )
    assert block, "README.md lost its quick-start block"
    return block_commands(block.group(1))


def runnable_blocks() -> list[tuple[str, list[list[str]]]]:
    """(document, commands) of every block fenced ```` ```bash runnable ```` but the README's quick start: README.md
    first, then docs/*.md by name."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in re.findall(r"^```bash runnable\n(.*?)^```", path.read_text(), re.S | re.M):
            found.append((path.name, block_commands(block)))
    quick_start = readme_commands()
    return [(name, commands) for name, commands in found if commands != quick_start]


def kind(words: list[str]) -> str:
    """Which :data:`TOY` overrides a documented command gets."""
    script = next((w for w in words if w.startswith("recipes/")), "")
    if words[:2] == ["invert4tvg", "synth"]:
        return "synth"
    if words[:2] == ["invert4tvg", "eval"]:
        return "eval"
    if "sft_warmstart" in script or (words[:2] == ["invert4tvg", "train"] and "--sft" in words):
        return "train"
    if "grpo_qwen25vl" in script or words[:2] == ["invert4tvg", "train"]:
        return "launch"
    raise AssertionError(f"no toy size for a documented command: {shlex.join(words)}")


def fresh_copy(dst: Path) -> Path:
    """The files a clone of this checkout has (tracked plus new, not ignored), without runs/ or caches."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:  # not a git checkout (an unpacked source archive): copy the tree
        shutil.copytree(REPO, dst, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__"))
        return dst
    for name in filter(None, listed.stdout.split("\0")):
        if (REPO / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dst / name)
    return dst


def toy(words: list[str]) -> list[str]:
    """The :data:`TOY` overrides for a documented command, except a length the command sets itself (a head whose
    answer needs 26 tokens is documented with them)."""
    overrides = TOY[kind(words)]
    pairs = [overrides[i : i + 2] for i in range(0, len(overrides), 2)]
    return [
        w
        for flag, value in pairs
        if flag != "--max_completion_length" or flag not in words
        for w in (flag, value)
    ]


def executable(words: list[str]) -> list[str]:
    """The README's program names as this interpreter runs them."""
    program, rest = words[0], words[1:]
    if program == "invert4tvg":
        return [sys.executable, "-m", "invert4tvg.cli", *rest]
    if program == "accelerate":
        return [sys.executable, "-m", "accelerate.commands.launch", *rest[1:]]  # rest[0] == "launch"
    if program == "python":
        return [sys.executable, *rest]
    raise AssertionError(f"unexpected program in a runnable block: {program}")


def run(words: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(executable(words), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_readme_quick_start_from_a_fresh_clone(tmp_path):
    clone = fresh_copy(tmp_path / "clone")
    commands = readme_commands()
    assert [c[:2] for c in commands] == [
        ["invert4tvg", "synth"],
        ["invert4tvg", "tiny-model"],
        ["invert4tvg", "train"],
        ["accelerate", "launch"],
        ["invert4tvg", "eval"],
    ]
    synth, tiny, sft, grpo, evaluate = commands
    grpo = [*grpo, *TOY["launch"]]

    # Before anything is prepared the GRPO recipe stops with one line naming what is missing and what creates it
    # (the recipe exits 2; `accelerate launch -q` prints no traceback of its own and exits 1).
    early = run(grpo, clone)
    assert early.returncode != 0 and "Traceback" not in early.stderr
    errors = [line for line in early.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, early.stderr[-3000:]
    last = errors[0]
    assert "model_name_or_path=runs/demo/sft/final" in last and "config_checks.py" not in early.stderr
    for step in (synth, tiny, sft[:4]):
        assert shlex.join(step[:4]) in last

    for words in ([*synth, *TOY["synth"]], tiny, [*sft, *TOY["train"]], grpo):
        done = run(words, clone)
        assert done.returncode == 0, f"{shlex.join(words)}\n{done.stderr[-4000:]}"

    # The SFT recipe honours report_to as the GRPO one does: TensorBoard events next to metrics.jsonl.
    assert list((clone / "runs" / "demo" / "sft" / "tensorboard").glob("events.out.tfevents.*"))

    run_dir = clone / "runs" / "quickstart"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    tvg_rows = [r for r in rows if "tvg" in r["task"].split(",")]
    assert tvg_rows, f"no grounding step drawn: {[r['task'] for r in rows]}"
    for row in tvg_rows:  # the reward given by path is scored and logged per reward function, as TRL does
        assert 0.0 <= row["rewards/span_inside_video/mean"] <= 1.0
        assert {"rewards/iou/mean", "rewards/format/mean", "rewards/span_inside_video/std"} <= set(row)
    trained = json.loads((run_dir / "eval" / "metrics.json").read_text())

    # eval without --config uses the run's own configuration and reproduces the run's own test evaluation.
    done = run(evaluate, clone)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "default prompts" not in done.stderr
    again = json.loads(
        (run_dir / "eval-test" / "metrics.json").read_text()
    )  # --out's default: next to final/
    keys = ("R1@0.3", "R1@0.5", "R1@0.7", "mIoU", "VC", "AR", "VD")
    assert {k: again[k] for k in keys} == {k: trained[k] for k in keys}
    assert again["counts"]["samples"] == trained["counts"]["samples"] > 0
    assert again["metadata"]["config"] == str(run_dir.relative_to(clone) / "metadata.json")
    assert re.search(r"R1@0\.3=\d+\.\d .*mIoU=\d+\.\d .*\(parser answer, \d+ queries", done.stdout)

    # Every other runnable block of the docs, in the same clone: the quick start made the benchmark and the tiny
    # model they start from.
    for name, commands in runnable_blocks():
        for words in commands:
            done = run([*words, *toy(words)], clone)
            assert done.returncode == 0, f"{name}: {shlex.join(words)}\n{done.stderr[-4000:]}"
    assert (clone / "runs" / "heads" / "sft" / "eval-test" / "metrics.json").is_file()  # docs/heads.md's eval
    assert (clone / "runs" / "heads" / "grpo" / "final").is_dir()


def test_the_docs_have_runnable_blocks_the_quick_start_test_can_run():
    """Cheap check of what the slow test above runs: the blocks are found and each command has a toy size."""
    blocks = runnable_blocks()
    assert "heads.md" in [name for name, _ in blocks]
    for name, commands in blocks:
        assert commands, f"{name}: an empty runnable block"
        for words in commands:
            assert words[0] in ("invert4tvg", "accelerate", "python"), f"{name}: {shlex.join(words)}"
            kind(words)
