"""The reward registry: built-ins register themselves on import; third-party rewards come from entry points.

A plugin package declares its rewards in its own pyproject.toml::

    [project.entry-points."invert4tvg.rewards"]
    my_reward = "my_package.rewards:my_reward"

and ``rewards.get("my_reward")`` finds it once the package is installed. An entry point may name a function (used
as is) or a class (instantiated by ``get`` with no arguments, by ``build`` with the caller's options).

A name that is not registered but reads as a path is imported, as TRL's CLI does for ``reward_funcs``:
``module.path:function``, ``module.path.function`` or ``path/to/file.py:function`` (a module is looked for on
``sys.path`` and then in the working directory). Importing the module also runs its ``@register`` decorators.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

from rewards.base import GuardedReward, Reward

ENTRY_POINT_GROUP = "invert4tvg.rewards"

logger = logging.getLogger(__name__)
T = TypeVar("T")

_registry: dict[str, Any] = {}
_instances: dict[str, Any] = {}
_entry_points_loaded = False
_from_entry_points: dict[str, str] = {}  # name -> "module:attr (distribution)", for origin()
_lock = threading.RLock()


def register(name: str, obj: Any = None, *, override: bool = False) -> Any:
    """Register a reward under ``name``; use as ``@register("name")`` on a function or class, or call directly.

    Re-registering the same object is a no-op; a different object under a taken name raises unless ``override``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("a reward name must be a non-empty string")

    def add(target: T) -> T:
        if not callable(target):
            raise TypeError(f"reward {name!r}: {target!r} is not callable")
        with _lock:
            current = _registry.get(name)
            if current is not None and current is not target and not override:
                raise ValueError(f"reward name {name!r} is already registered to {current!r}")
            _registry[name] = target
            _instances.pop(name, None)
        return target

    return add if obj is None else add(obj)


def unregister(name: str) -> None:
    with _lock:
        _registry.pop(name, None)
        _instances.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in _registry:
                logger.warning(
                    "reward plugin %s (%s) ignored: the name is already registered", ep.name, ep.value
                )
                continue
            try:
                target = ep.load()
            except Exception as err:  # one broken plugin must not hide the others
                logger.warning("reward plugin %s (%s) failed to load: %s", ep.name, ep.value, err)
                continue
            register(ep.name, target)
            dist = getattr(ep, "dist", None)
            _from_entry_points[ep.name] = f"{ep.value}" + (
                f", package {dist.name}" if dist is not None else ""
            )


def reload_entry_points() -> None:
    """Scan the entry points again (after installing a plugin in a running process)."""
    global _entry_points_loaded
    with _lock:
        _entry_points_loaded = False
    _load_entry_points()


def is_path(name: str) -> bool:
    """Whether ``name`` names a reward by import path rather than by registered name."""
    return ":" in name or "." in name


def display_name(name: str) -> str:
    """What a reward is logged as: its registered name, or the function's name for a path (TRL logs
    ``rewards/<__name__>/mean``)."""
    return name.rsplit(":", 1)[-1].rsplit(".", 1)[-1] if is_path(name) else name


def _import_module(module: str, name: str):
    if module.endswith(".py") or "/" in module or os.sep in module:
        path = Path(module).expanduser()
        if not path.is_file():
            raise KeyError(f"reward {name!r}: file {path} not found (relative to {Path.cwd()})")
        spec = importlib.util.spec_from_file_location(f"invert4tvg_reward_{path.stem}", path)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = loaded
        try:
            spec.loader.exec_module(loaded)
        except Exception as err:
            del sys.modules[spec.name]
            raise KeyError(_import_failed(name, str(path), err)) from err
        return loaded
    try:
        return _import(module, name)
    except ModuleNotFoundError as err:
        if err.name != module.split(".")[0] or os.getcwd() in sys.path:
            raise KeyError(_import_failed(name, module, err)) from err
    sys.path.append(os.getcwd())  # a module next to the config, as TRL's CLI finds one
    try:
        return _import(module, name)
    except ModuleNotFoundError as err:
        raise KeyError(
            f"reward {name!r}: cannot import module {module!r} ({err}); give module.path:function with the "
            f"module importable (installed, or under {Path.cwd()}), or path/to/file.py:function"
        ) from None


def _import(module: str, name: str):
    """``importlib.import_module``; an error raised by the module's own code names the reward and where it failed
    (``ModuleNotFoundError`` of the module itself passes through, to be looked for next to the config)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name == module.split(".")[0]:
            raise
        raise KeyError(_import_failed(name, module, err)) from err
    except Exception as err:
        raise KeyError(_import_failed(name, module, err)) from err


def _import_failed(name: str, source: str, err: BaseException) -> str:
    """One line: the reward, what was imported, and the file and line of the user's code that raised."""
    import traceback

    where = ""
    if isinstance(err, SyntaxError) and err.filename:
        where = f" at {err.filename}, line {err.lineno}"
    else:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if "importlib" not in f.filename]
        if frames:
            where = f" at {frames[-1].filename}, line {frames[-1].lineno}"
    return f"reward {name!r}: importing {source} failed{where}: {type(err).__name__}: {err}"


def _load_path(name: str) -> Any:
    module, sep, attr = name.rpartition(":")
    if not sep:
        module, _, attr = name.rpartition(".")
    if not module or not attr:
        raise KeyError(f"reward {name!r}: write module.path:function or path/to/file.py:function")
    target = getattr(_import_module(module, name), attr, None)
    if target is None or not callable(target):
        raise KeyError(f"reward {name!r}: {module} has no callable {attr!r}")
    return target


def _lookup(name: str) -> Any:
    if name not in _registry:
        _load_entry_points()
    if name not in _registry and is_path(name):
        register(name, _load_path(name))
    try:
        return _registry[name]
    except KeyError:
        raise KeyError(
            f"unknown reward {name!r}; available: {', '.join(available())}; a reward of your own can be named "
            "by path: module.path:function or path/to/file.py:function"
        ) from None


def get(name: str) -> Callable[..., list[float | None]]:
    """The reward callable registered as ``name`` (a class is instantiated once with default options)."""
    target = _lookup(name)
    if not isinstance(target, type):
        return target
    with _lock:
        if name not in _instances:
            _instances[name] = target()
        return _instances[name]


def build(name: str, **options: Any) -> Callable[..., list[float | None]]:
    """A new, configured instance of reward ``name``.

    Classes receive ``options`` as keyword arguments (``rewards.build("invert4tvg", weights={...},
    on_error="zero")``). Plain functions accept only ``on_error``, which wraps them in the error policy.
    """
    target = _lookup(name)
    if isinstance(target, type):
        return target(**options)
    on_error = options.pop("on_error", None)
    if options:
        raise TypeError(
            f"reward {name!r} is a function and takes no options (got {', '.join(sorted(options))})"
        )
    if on_error is None:
        return target
    return GuardedReward(target, name, on_error=on_error)


def available() -> list[str]:
    """Names of all registered rewards, built-in and plugin, sorted."""
    _load_entry_points()
    return sorted(_registry)


def origin(name: str) -> str:
    """Where reward ``name`` comes from, for the line a run starts with: ``built-in``, ``entry point
    module:attr, package P``, ``file path/to/file.py`` or ``module module.path``."""
    target = _lookup(name)
    if name in _from_entry_points:
        return f"entry point {_from_entry_points[name]}"
    if is_path(name):
        module = name.rpartition(":")[0] or name.rpartition(".")[0]
        return f"file {module}" if module.endswith(".py") or "/" in module else f"module {module}"
    module = getattr(target, "__module__", "") or ""
    return "built-in" if module.split(".")[0] == "rewards" else f"registered by {module}"


def is_builtin(name: str) -> bool:
    target = _lookup(name)
    return isinstance(target, type) and issubclass(target, Reward)
