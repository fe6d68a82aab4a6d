"""Ray for rollout workers: start a private local instance or join a cluster, and reserve worker resources.

By default (``ray_address: null``) the trainer starts its own single-node Ray: dashboard off (it serves Ray's job
submission API, which runs arbitrary code for whoever can reach it) and every Ray server bound to 127.0.0.1, so
nothing is reachable from other machines. ``ray_address: auto`` (or ``host:port``) joins a running cluster
instead, whose security is then the cluster operator's (docs/rollouts.md, docker/ray-cluster.md).
Rollout workers get one placement-group bundle each, so their CPUs/GPUs are reserved before any model loads and a
restarted worker lands in the slot its predecessor freed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

logger = logging.getLogger(__name__)

LOCAL = (None, "", "local")
NAMESPACE = "invert4tvg"
_WAIT_SLICE_S = 30.0


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Make Ray pick 127.0.0.1 as this node's address while it starts a local instance.

    Ray binds its servers (GCS, raylet, object manager, workers) to all interfaces unless the node address is the
    loopback one; passing ``_node_ip_address="127.0.0.1"`` does not help, Ray swaps it for the routable address.
    Ray's own switch for that is the constant behind ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` (how it runs on
    macOS), read when the node address is resolved during ``ray.init``; it is restored right after.
    """
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - layout of a future Ray
        yield
        return
    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):  # pragma: no cover
        logger.warning("this Ray version cannot be bound to 127.0.0.1; it listens on all interfaces")
        yield
        return
    previous = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


def rollout_gpus(needed: float, visible: Sequence[str], trainer: int | None) -> list[str]:
    """The GPUs (``CUDA_VISIBLE_DEVICES`` entries) a local Ray may give rollout workers: the visible ones except
    the trainer's (position ``trainer`` in ``visible``), unless too few would be left for ``needed`` GPUs; then the
    trainer's GPU is shared (fractional ``gpus_per_worker``, colocation) and a warning says so."""
    others = [gpu for i, gpu in enumerate(visible) if i != trainer]
    if trainer is None or len(others) >= math.ceil(needed):
        return others if trainer is not None else list(visible)
    logger.warning(
        "rollout workers need %s GPUs and only %d are visible besides the trainer's (cuda:%d): they share it. "
        "Lower vLLM's gpu_memory_utilization accordingly.",
        needed,
        len(others),
        trainer,
    )
    return list(visible)


def _visible_gpus() -> tuple[list[str], int | None]:
    """The GPUs this process can see and the one the trainer uses (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return [], None
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = (
        [d.strip() for d in listed.split(",") if d.strip()]
        if listed is not None
        else [str(i) for i in range(torch.cuda.device_count())]
    )
    return visible, torch.cuda.current_device()


@contextlib.contextmanager
def _cuda_visible(devices: list[str] | None) -> Iterator[None]:
    """Ray assigns GPUs from the ``CUDA_VISIBLE_DEVICES`` its node starts with."""
    if devices is None:
        yield
        return
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous


class _TokenAuthNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def _quiet_token_auth_notice() -> None:
    """Ray 2.60 turns token authentication on for every new local instance (a token in ~/.ray/auth_token, bound to
    127.0.0.1 here anyway) and says so at every start with a warning a user has nothing to do about. That one
    notice is dropped; authentication stays on, and RAY_AUTH_MODE still chooses (docs/rollouts.md)."""
    ray_logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _TokenAuthNotice) for f in ray_logger.filters):
        ray_logger.addFilter(_TokenAuthNotice())


def connect(address: str | None, num_cpus: int, num_gpus: float | None = None) -> bool:
    """Make sure this process is connected to Ray. Returns True when it started a local instance (and so
    owns its shutdown); an already initialised Ray (a test session, a user's own ``ray.init``) is reused.

    A local instance gets ``num_gpus`` GPUs (rounded up; 0 for CPU workers), taken from the visible GPUs other
    than the trainer's (:func:`rollout_gpus`); rollout pools always say how many. ``None`` leaves it to Ray, which
    offers every GPU, the trainer's too (a test session's Ray). Without CUDA they are logical GPUs (tests)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return False
    if address in LOCAL:
        _quiet_token_auth_notice()
        gpus = None if num_gpus is None else math.ceil(num_gpus)
        visible, trainer = _visible_gpus()
        devices = None
        if visible and gpus:
            devices = rollout_gpus(num_gpus, visible, trainer)
            if len(devices) < gpus:
                raise RuntimeError(
                    f"rollout workers need {gpus} GPUs; this machine shows {len(visible)} ({visible}). Lower "
                    "rollout_workers or gpus_per_worker, or join a cluster with more GPUs (ray_address)."
                )
            devices = devices[:gpus]
        with _loopback_only(), _cuda_visible(devices):
            ray.init(
                address="local",
                num_cpus=num_cpus,
                num_gpus=gpus,
                include_dashboard=False,
                namespace=NAMESPACE,
                log_to_driver=True,
            )
        logger.info(
            "started a local Ray instance on 127.0.0.1 (%d CPUs, %s GPUs %s for rollout workers)",
            num_cpus,
            gpus,
            devices or "",
        )
        return True
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=True)
    logger.info("joined the Ray cluster at %s: %s", address, ray.cluster_resources())
    return False


def shutdown(started: bool) -> None:
    import ray

    if started and ray.is_initialized():
        ray.shutdown()


def reserve(num_workers: int, cpus: float, gpus: float, strategy: str, timeout_s: float) -> Any:
    """A placement group with one ``{CPU, GPU}`` bundle per rollout worker, or a clear error when the cluster
    cannot hold them."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    bundle: dict[str, float] = {"CPU": cpus}
    if gpus:
        bundle["GPU"] = gpus
    group = placement_group([dict(bundle) for _ in range(num_workers)], strategy=strategy)
    deadline = time.monotonic() + timeout_s
    while not group.wait(timeout_seconds=min(_WAIT_SLICE_S, max(deadline - time.monotonic(), 0.1))):
        if time.monotonic() < deadline:  # other jobs may hold the resources: say what we wait for
            logger.warning(
                "waiting for Ray to reserve %d rollout-worker bundles of %s (%s free of %s)",
                num_workers,
                bundle,
                ray.available_resources(),
                ray.cluster_resources(),
            )
            continue
        remove_placement_group(group)
        raise RuntimeError(
            f"Ray could not reserve {num_workers} rollout-worker bundles of {bundle} ({strategy}) within "
            f"{timeout_s:.0f} s; the cluster has {ray.cluster_resources()} "
            f"({ray.available_resources()} free). Lower rollout_workers, give each fewer resources, or add "
            f"nodes (docs/rollouts.md)."
        )
    return group


def release(group: Any) -> None:
    import ray
    from ray.util.placement_group import remove_placement_group

    if group is not None and ray.is_initialized():
        with contextlib.suppress(Exception):  # already gone with its job
            remove_placement_group(group)
