"""Putting the fake vLLM (``tests/fakes/vllm``) in place of the real one, for the tests that ask for it.

The fake is importable as ``vllm`` only inside :func:`fake_vllm` (this process) and, when the real vLLM is not
installed, in the Ray workers started inside :func:`ray_sees_fake_vllm`; wherever the real vLLM imports, it is left
alone and the real engines run the contract suite (the fake only shadows it inside ``fake_vllm``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

FAKES = Path(__file__).resolve().parent / "fakes"


def real_vllm_installed() -> bool:
    with _without_vllm_modules():
        return importlib.util.find_spec("vllm") is not None and not _is_fake_spec()


def _is_fake_spec() -> bool:
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin is not None and Path(spec.origin).is_relative_to(FAKES)


@contextlib.contextmanager
def _without_vllm_modules() -> Iterator[dict[str, ModuleType]]:
    saved = {name: mod for name, mod in sys.modules.items() if name == "vllm" or name.startswith("vllm.")}
    for name in saved:
        del sys.modules[name]
    try:
        yield saved
    finally:
        for name in [n for n in sys.modules if n == "vllm" or n.startswith("vllm.")]:
            del sys.modules[name]
        sys.modules.update(saved)


@contextlib.contextmanager
def fake_vllm() -> Iterator[ModuleType]:
    """``import vllm`` gives the fake inside this block; whatever was imported before is restored after it."""
    with _without_vllm_modules():
        sys.path.insert(0, str(FAKES))
        try:
            module = importlib.import_module("vllm")
            assert Path(module.__file__).is_relative_to(FAKES), module.__file__
            yield module
        finally:
            sys.path.remove(str(FAKES))
            sys.path_importer_cache.pop(str(FAKES), None)


@contextlib.contextmanager
def ray_sees_fake_vllm() -> Iterator[bool]:
    """While a local Ray starts in this block, its workers get the fake on ``PYTHONPATH`` (they inherit the
    environment Ray starts with). Only when the real vLLM is not installed: it must never be shadowed."""
    if real_vllm_installed():
        yield False
        return
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(FAKES), previous) if p)
    try:
        yield True
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
