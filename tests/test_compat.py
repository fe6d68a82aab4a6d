"""The torchvision compatibility shim: fixes exactly the CUDA-torchvision-on-CPU-torch situation, nothing else, in
every interpreter of the venv (the ``invert4tvg-torchvision.pth`` hook), not only after ``import invert4tvg``."""

from __future__ import annotations

import site
import subprocess
import sys
from importlib.metadata import distribution

import pytest
import torch

from invert4tvg import _build, _compat

MISMATCH = torch.version.cuda is None and (_compat._torchvision_build_tag() or "").startswith("cu")
needs_fix = pytest.mark.skipif(not MISMATCH, reason="torchvision matches torch's build here; nothing to fix")


def run(code: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, timeout=300)


def hook_installed() -> bool:
    return any(str(f).endswith(_build.PTH_NAME) for f in distribution("invert4tvg").files or ())


@needs_fix
def test_plain_import_fails_without_the_shim():
    # -S: no site processing, so no .pth hook; site-packages is put on the path by hand
    paths = [*site.getsitepackages()]
    result = run(f"import sys; sys.path[:0] = {paths!r}; import torchvision", "-S")
    assert result.returncode != 0
    assert "torchvision::nms" in result.stderr


@needs_fix
def test_trl_and_qwen25_vl_import_in_a_fresh_interpreter():
    """What a plugin author types first: no ``import invert4tvg`` anywhere."""
    if not hook_installed():
        pytest.skip(
            f"this venv's invert4tvg was installed before {_build.PTH_NAME} existed: reinstall it (make install)"
        )
    result = run(
        "import sys\n"
        "from trl import GRPOConfig\n"
        "from transformers import TrainingArguments, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor\n"
        "import peft, torchvision.transforms.v2\n"
        "print(GRPOConfig.__name__, sys.modules['invert4tvg._compat']._library is not None)",
        "-I",  # isolated: not even the working directory on the path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["GRPOConfig", "True"]


def test_start_up_does_not_import_torch():
    """The hook costs one small import at every interpreter start; torch only comes when torchvision does."""
    result = run("import sys; print('torch' in sys.modules, 'invert4tvg._compat' in sys.modules)", "-I")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "False"


@needs_fix
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
