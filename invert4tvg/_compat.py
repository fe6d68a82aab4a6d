"""Make the CUDA-only torchvision wheel importable on a CPU-only torch.

The only torchvision wheel that matches our torch pin is a CUDA build. On a CPU build of torch its import fails
with ``RuntimeError: operator torchvision::nms does not exist`` (the C++ ops library cannot load), and that import
error takes down transformers' Qwen2-VL video processor and even ``import peft``. torchvision registers fake
(meta) kernels for ``nms``/``qnms`` at import time and only needs their *schemas* to exist; nothing in this project
calls them. Defining the two schemas before torchvision is imported is enough.

The patch applies only when all of these hold, and is a no-op otherwise (in particular on every GPU machine):
torchvision is installed, not yet imported, is a CUDA build (``+cu`` version), and torch has no CUDA.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import torch

_OPS = ("nms", "qnms")
_library: torch.library.Library | None = None  # kept alive: dropping it unregisters the schemas


def _torchvision_build_tag() -> str | None:
    """The local version tag of the installed torchvision (e.g. ``cu130``), read without importing it."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return None
    version_file = Path(spec.origin).with_name("version.py")
    try:
        match = re.search(r"__version__\s*=\s*['\"][^'\"+]*\+?([^'\"]*)['\"]", version_file.read_text())
    except OSError:
        return None
    return match.group(1) if match else None


def needs_torchvision_patch() -> bool:
    if "torchvision" in sys.modules or torch.version.cuda is not None:
        return False
    tag = _torchvision_build_tag()
    return tag is not None and tag.startswith("cu")


def patch_torchvision() -> bool:
    """Register the missing op schemas when needed. Returns True when the patch was applied."""
    global _library
    if _library is not None or not needs_torchvision_patch():
        return False
    library = torch.library.Library("torchvision", "DEF")
    for op in _OPS:
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _library = library
    return True


patch_torchvision()
