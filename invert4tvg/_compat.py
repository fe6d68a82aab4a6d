"""Make the CUDA-only torchvision wheel importable on a CPU-only torch, in every interpreter of the venv.

The only torchvision wheel that matches our torch pin is a CUDA build. On a CPU build of torch its import fails
with ``RuntimeError: operator torchvision::nms does not exist`` (the C++ ops library cannot load), and that import
error takes down transformers' Qwen2-VL video processor, ``import peft`` and ``from trl import GRPOConfig``.
torchvision registers fake (meta) kernels for ``nms``/``qnms`` at import time and only needs their *schemas* to
exist; nothing in this project calls them. Defining the two schemas before torchvision is imported is enough.

The patch applies only when all of these hold, and is a no-op otherwise (in particular on every GPU machine):
torchvision is installed, not yet imported, is a CUDA build (``+cu`` version), and torch has no CUDA.

It must run before *any* ``import torchvision`` in the process, including processes that never import us: vLLM's
spawned workers, Ray workers, a plugin author's ``from trl import GRPOConfig``. So the package installs a ``.pth``
file (``invert4tvg-torchvision.pth``, written by ``invert4tvg/_build.py``) that imports this module at interpreter
start-up, and this module only adds an import hook: torch is imported, and the schemas registered, when something
first imports torchvision (a start-up that never touches torchvision does not pay for torch).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

_OPS = ("nms", "qnms")
_library: Any = None  # the torch.library.Library, kept alive: dropping it unregisters the schemas
_in_hook = False  # set while the hook itself looks torchvision up (find_spec would call the hook again)


def _torchvision_build_tag() -> str | None:
    """The local version tag of the installed torchvision (e.g. ``cu130``), read without importing it."""
    global _in_hook
    _in_hook = True
    try:
        spec = importlib.util.find_spec("torchvision")
    finally:
        _in_hook = False
    if spec is None or spec.origin is None:
        return None
    version_file = Path(spec.origin).with_name("version.py")
    try:
        match = re.search(r"__version__\s*=\s*['\"][^'\"+]*\+?([^'\"]*)['\"]", version_file.read_text())
    except OSError:
        return None
    return match.group(1) if match else None


def needs_torchvision_patch() -> bool:
    if "torchvision" in sys.modules:
        return False
    tag = _torchvision_build_tag()
    if tag is None or not tag.startswith("cu"):
        return False
    import torch  # only now: a CUDA torchvision is installed, and it imports torch anyway

    return torch.version.cuda is None


def patch_torchvision() -> bool:
    """Register the missing op schemas when needed. Returns True when the patch was applied."""
    global _library
    if _library is not None or not needs_torchvision_patch():
        return False
    import torch

    library = torch.library.Library("torchvision", "DEF")
    for op in _OPS:
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _library = library
    return True


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs :func:`patch_torchvision` when ``torchvision`` is first looked up, then lets the normal finders
    import it (``find_spec`` returns None) and removes itself."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "torchvision" and not _in_hook:
            remove_hook()
            patch_torchvision()
        return None


def install_hook() -> None:
    """Patch when torchvision is imported later; at once if torch is already imported (nothing to defer)."""
    if "torchvision" in sys.modules or any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        return
    if "torch" in sys.modules:
        patch_torchvision()
        return
    sys.meta_path.insert(0, _BeforeTorchvision())


def remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _BeforeTorchvision)]


install_hook()
