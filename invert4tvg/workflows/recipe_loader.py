"""Find and import a recipe script (``recipes/*.py``): recipes are scripts users copy and edit, not package modules."""

from __future__ import annotations

import importlib.util
import sysconfig
from pathlib import Path
from types import ModuleType


def recipe_path(name: str) -> Path:
    """``./recipes/NAME.py`` first (a user's edited copy), then the source checkout, then the installed copy."""
    checkout = Path(__file__).resolve().parents[2]
    installed = Path(sysconfig.get_paths()["data"]) / "share" / "invert4tvg"
    candidates = [Path.cwd() / "recipes", checkout / "recipes", installed / "recipes"]
    for directory in candidates:
        if (directory / f"{name}.py").is_file():
            return directory / f"{name}.py"
    raise FileNotFoundError(
        f"recipe {name}.py not found in {', '.join(str(d) for d in candidates)}; reinstall invert4tvg or run from "
        "a checkout"
    )


def load_recipe(name: str) -> ModuleType:
    path = recipe_path(name)
    spec = importlib.util.spec_from_file_location(f"invert4tvg_recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
