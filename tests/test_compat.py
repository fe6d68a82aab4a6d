"""The torchvision compatibility shim: fixes exactly the CUDA-torchvision-on-CPU-torch situation, nothing else."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from invert4tvg import _compat

MISMATCH = torch.version.cuda is None and (_compat._torchvision_build_tag() or "").startswith("cu")


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not MISMATCH, reason="torchvision matches torch's build here; nothing to fix")
def test_plain_import_fails_without_the_shim():
    result = run("import torchvision")
    assert result.returncode != 0
    assert "torchvision::nms" in result.stderr


@pytest.mark.skipif(not MISMATCH, reason="torchvision matches torch's build here; nothing to fix")
def test_importing_the_package_first_makes_the_stack_work():
    result = run(
        "import invert4tvg, torchvision.transforms.v2, peft\n"
        "from transformers import Qwen2VLVideoProcessor\n"
        "from invert4tvg import _compat\n"
        "print(_compat._library is not None)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_no_patch_when_torchvision_is_already_imported_or_torch_has_cuda(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", object())
    assert not _compat.needs_torchvision_patch()
    monkeypatch.delitem(sys.modules, "torchvision")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert not _compat.needs_torchvision_patch()
