"""``benchmarks/gpu_smoke.py`` as a bare GPU machine runs it: from the repository root, with only torch,
transformers, accelerate and peft importable (av, datasets, spacy, ray, trl and vllm are made unimportable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("av", "datasets", "spacy", "ray", "trl", "vllm")
BLOCKER = f"""
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not on a bare GPU machine)")
sys.meta_path.insert(0, _Blocker())
"""


def python(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)  # runs at interpreter start, before the script
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def smoke(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return python(tmp_path, "benchmarks/gpu_smoke.py", *args)


def test_gpu_smoke_runs_with_only_torch_transformers_accelerate_peft(tmp_path):
    out = tmp_path / "smoke.json"
    done = smoke(
        tmp_path, "--tiny", "--steps", "1", "--max-new-tokens", "4", "--modes", "full", "--json", str(out)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(not on a bare GPU machine)" not in done.stderr
    result = json.loads(out.read_text())["results"][0]
    assert result["step0_kl_max"] == 0.0  # the reference is the policy at step 0
    assert result["plan_peak_GiB"] > 0 and result["video_tokens"] == 32
    check = python(tmp_path, "-c", "import av")  # the blocker works: the script's imports were really limited
    assert check.returncode != 0 and "not on a bare GPU machine" in check.stderr


def test_gpu_smoke_without_cuda_fails_instead_of_falling_back(tmp_path):
    done = smoke(tmp_path, "--steps", "1")
    assert done.returncode != 0
    assert "no CUDA device" in done.stderr and "--tiny" in done.stderr


def test_gpu_smoke_defaults_to_the_recipes_completion_length(tmp_path):
    done = smoke(tmp_path, "--help")
    assert done.returncode == 0 and "the recipes' 1024" in done.stdout
