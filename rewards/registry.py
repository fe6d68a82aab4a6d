"""The reward registry: built-ins register themselves on import; third-party rewards come from entry points.

A plugin package declares its rewards in its own pyproject.toml::

    [project.entry-points."invert4tvg.rewards"]
    my_reward = "my_package.rewards:my_reward"

and ``rewards.get("my_reward")`` finds it once the package is installed. An entry point may name a function (used
as is) or a class (instantiated by ``get`` with no arguments, by ``build`` with the caller's options).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from rewards.base import GuardedReward, Reward

ENTRY_POINT_GROUP = "invert4tvg.rewards"

logger = logging.getLogger(__name__)
T = TypeVar("T")

_registry: dict[str, Any] = {}
_instances: dict[str, Any] = {}
_entry_points_loaded = False
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


def reload_entry_points() -> None:
    """Scan the entry points again (after installing a plugin in a running process)."""
    global _entry_points_loaded
    with _lock:
        _entry_points_loaded = False
    _load_entry_points()


def _lookup(name: str) -> Any:
    if name not in _registry:
        _load_entry_points()
    try:
        return _registry[name]
    except KeyError:
        raise KeyError(f"unknown reward {name!r}; available: {', '.join(available())}") from None


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


def is_builtin(name: str) -> bool:
    target = _lookup(name)
    return isinstance(target, type) and issubclass(target, Reward)
