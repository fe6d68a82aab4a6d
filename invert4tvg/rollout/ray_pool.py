"""Rollouts on a pool of Ray actors (``backend: ray-hf`` / ``ray-vllm``), with weight sync and worker restarts.

- **Sharding**: each ``generate`` call splits the batch across workers by expected work (``sharding.py``); a
  request's samples all come from one worker, and its video is put in the object store once and fetched by that
  worker only. Results come back in request order, each completion tagged with the policy version it came from.
- **Weight sync**: ``update_weights`` puts the payload (the trainer's trainable parameters: LoRA adapters only
  when training with LoRA) in the object store once; every worker loads it and confirms the version. Workers
  refuse to generate for a version they do not hold, and the pool rejects completions tagged with another one.
- **Failures**: a worker that dies (or hangs past ``generate_timeout_s``) is re-created from its spec in its
  placement-group slot, replays the weight log up to the current version, and gets its shard again, at most
  ``max_retries`` times per shard and ``max_restarts`` times per pool; restarts are counted and logged.
- **GPUs**: a local Ray gets only the GPUs the workers need, never the trainer's while others are free
  (``cluster.connect``). A ``ray-vllm`` engine with ``tensor_parallel_size`` N > 1 gets N bundles: its actor holds
  no GPU itself (``num_gpus=0``) and vLLM's Ray executor starts its N GPU workers on exactly those bundles
  (``VLLM_RAY_BUNDLE_INDICES``, the actor's placement group captured by child tasks), OpenRLHF's layout; left to
  itself, vLLM would target the group's first GPU bundles, already held by the rollout actors, and wait forever.
- **Reproducibility**: sampled shards get seeds derived from (seed, policy version, call, shard), so a retried
  shard, or a rerun of the same training, samples the same completions.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from invert4tvg.rollout import cluster
from invert4tvg.rollout.base import (
    Completion,
    RolloutEngine,
    RolloutRequest,
    SamplingParams,
    StaleWeightsError,
)
from invert4tvg.rollout.sharding import expected_work, plan_shards, shard_seed
from invert4tvg.rollout.weights import WeightLog, WeightSource, pack_weights, payload_nbytes
from invert4tvg.rollout.worker import EngineSpec, RolloutWorker, WireRequest

logger = logging.getLogger(__name__)

# Forwarded to workers so they resolve models the way the trainer does (a joined cluster has its own env), and
# every ``VLLM_*`` variable, so vLLM inside a worker is configured as the user configured it.
FORWARDED_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "TOKENIZERS_PARALLELISM",
)
FORWARDED_PREFIXES = ("VLLM_",)


def worker_env(environ: Mapping[str, str], bundles: Sequence[int] = ()) -> dict[str, str]:
    """The environment variables a worker gets: :data:`FORWARDED_ENV`, ``VLLM_*``, and for a tensor-parallel vLLM
    engine the placement-group bundles its vLLM workers must use."""
    env = {k: v for k, v in environ.items() if k in FORWARDED_ENV or k.startswith(FORWARDED_PREFIXES)}
    if len(bundles) > 1:
        env["VLLM_RAY_BUNDLE_INDICES"] = ",".join(str(b) for b in bundles)
    return env


class RolloutWorkerError(RuntimeError):
    """A rollout worker failed in a way retries could not fix."""


class RayEnginePool(RolloutEngine):
    """A :class:`RolloutEngine` whose generation runs on ``num_workers`` Ray actors, each hosting one engine."""

    shares_model = False

    def __init__(
        self,
        spec: EngineSpec,
        num_workers: int = 2,
        *,
        initial_weights: Mapping[str, torch.Tensor] | None = None,
        cpus_per_worker: float = 1,
        gpus_per_worker: float = 0,
        ray_address: str | None = None,
        placement_strategy: str = "PACK",
        seed: int = 0,
        max_retries: int = 2,
        max_restarts: int | None = 16,
        startup_timeout_s: float = 900.0,
        reserve_timeout_s: float = 300.0,
        generate_timeout_s: float | None = None,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"rollout_workers must be >= 1, got {num_workers}")
        import ray

        # Bundles per worker: a vLLM engine with tensor parallelism N runs N GPU workers of its own.
        self.bundles_per_worker = (
            int(spec.vllm_options.get("tensor_parallel_size", 1)) if spec.backend == "vllm" else 1
        )
        if self.bundles_per_worker > 1:
            spec = replace(spec, vllm_options={"distributed_executor_backend": "ray", **spec.vllm_options})
        self.spec = spec
        self.num_workers = num_workers
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.seed = seed
        self.max_retries = max_retries
        self.max_restarts = max_restarts
        self.startup_timeout_s = startup_timeout_s
        self.generate_timeout_s = generate_timeout_s
        self.policy_version = 0
        self.restarts = 0
        self.retried_shards = 0
        self.last_sync: dict[str, float] = {}
        self._log: WeightLog[Any] = WeightLog()
        self._calls_at_version = 0
        self._actors: list[Any] = []
        self._info: list[dict[str, Any]] = []
        self._group = None
        self._closed = False
        bundles = num_workers * self.bundles_per_worker
        self._started_ray = cluster.connect(
            ray_address, num_cpus=math.ceil(bundles * cpus_per_worker), num_gpus=bundles * gpus_per_worker
        )
        try:
            self._group = cluster.reserve(
                bundles, cpus_per_worker, gpus_per_worker, placement_strategy, reserve_timeout_s
            )
            self._remote = ray.remote(RolloutWorker)
            self._actors = [self._create(i) for i in range(num_workers)]
            self._info = [self._await_ready(i) for i in range(num_workers)]
            logger.info("rollout workers ready: %s", [(w["index"], w["node"], w["pid"]) for w in self._info])
            if initial_weights is not None:
                self.update_weights(initial_weights, 0)
        except BaseException:
            self.close()
            raise

    # -- the RolloutEngine contract -------------------------------------------------------------------------
    def update_weights(self, weights: WeightSource | None, version: int) -> None:
        import ray

        self._check_open()
        if version < self.policy_version:
            raise StaleWeightsError(
                f"asked to serve policy version {version}, already at {self.policy_version}"
            )
        if weights is None:
            if version == self.policy_version:
                return
            raise ValueError(
                "a Ray rollout pool holds its own model copies: update_weights needs the weights "
                "(Policy.weights_for_sync()), not None"
            )
        start = time.perf_counter()
        weights = weights if isinstance(weights, Mapping) else dict(weights)
        payload = ray.put(pack_weights(weights))
        self._log.add(payload, weights.keys())
        calls = {i: actor.update_weights.remote(payload, version) for i, actor in enumerate(self._actors)}
        for index, call in calls.items():
            try:
                ray.get(call, timeout=self.startup_timeout_s)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as err:
                self._restart(index, version, f"during the weight sync to version {version}: {err}")
        self.policy_version = version
        self._calls_at_version = 0
        self.last_sync = {"seconds": time.perf_counter() - start, "bytes": payload_nbytes(weights)}

    def generate(
        self, requests: Sequence[RolloutRequest], sampling: SamplingParams
    ) -> list[list[Completion]]:
        import ray

        self._check_open()
        if not requests:
            return []
        shards = plan_shards([expected_work(r, sampling.max_tokens) for r in requests], self.num_workers)
        videos: dict[int, Any] = {}  # id(DecodedVideo) -> object ref: each clip enters the object store once
        for request in requests:
            if request.video is not None and id(request.video) not in videos:
                videos[id(request.video)] = ray.put(request.video)
        call = self._calls_at_version
        self._calls_at_version += 1
        tasks: dict[int, tuple[list[int], SamplingParams, list[WireRequest], list[Any]]] = {}
        for worker, shard in enumerate(shards):
            if shard:
                seeded = replace(sampling, seed=self._shard_seed(sampling, call, worker))
                tasks[worker] = (shard, seeded, *_wire(requests, shard, videos))
        attempts = dict.fromkeys(tasks, 0)
        pending = {self._submit(worker, tasks[worker]): worker for worker in tasks}
        results: list[list[Completion]] = [[] for _ in requests]
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.generate_timeout_s)
            if not ready:  # hung workers: kill them, so the retry path below restarts them
                for worker in pending.values():
                    logger.warning("rollout worker %d exceeded generate_timeout_s; killing it", worker)
                    ray.kill(self._actors[worker], no_restart=True)
                continue
            worker = pending.pop(ready[0])
            shard = tasks[worker][0]
            try:
                groups = ray.get(ready[0])
            except ray.exceptions.RayActorError as err:
                attempts[worker] += 1
                ids = [requests[i].request_id or str(i) for i in shard]
                if attempts[worker] > self.max_retries:
                    raise RolloutWorkerError(
                        f"rollout worker {worker} died {attempts[worker]} times while generating requests "
                        f"{ids[:8]}{' ...' if len(ids) > 8 else ''} (max_retries={self.max_retries}); the last "
                        f"error: {err}. If it is out of memory, lower rollout_batch_sequences or give each "
                        f"worker more memory."
                    ) from err
                self.retried_shards += 1
                self._restart(worker, self.policy_version, f"while generating {len(shard)} requests: {err}")
                pending[self._submit(worker, tasks[worker])] = worker
                continue
            self._check_versions(worker, groups)
            for index, group in zip(shard, groups):
                results[index] = group
        return results

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        import ray

        if ray.is_initialized():
            for actor in self._actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
        self._actors = []
        cluster.release(self._group)
        cluster.shutdown(self._started_ray)

    # -- what the trainer and tests can read ----------------------------------------------------------------
    def worker_pids(self) -> list[int]:
        return [int(info["pid"]) for info in self._info]

    def stats(self) -> dict[str, float]:
        """Counters for the step log: worker restarts, retried shards, and the last weight sync."""
        return {
            "rollout/restarts": self.restarts,
            "rollout/retried_shards": self.retried_shards,
            "rollout/sync_s": self.last_sync.get("seconds", 0.0),
            "rollout/sync_mb": self.last_sync.get("bytes", 0) / 2**20,
        }

    # -- internals ------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this rollout pool is closed")

    def _shard_seed(self, sampling: SamplingParams, call: int, worker: int) -> int:
        if sampling.seed is not None:  # the caller's seed: the same call gives the same completions
            return shard_seed(sampling.seed, worker)
        return shard_seed(self.seed, self.policy_version, call, worker)

    def _create(self, index: int) -> Any:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        spec = self.spec
        if spec.num_threads is None and not self.gpus_per_worker:
            spec = replace(spec, num_threads=max(int(self.cpus_per_worker), 1))
        tp = self.bundles_per_worker
        bundles = list(range(index * tp, (index + 1) * tp))
        env = worker_env(os.environ, bundles)
        return self._remote.options(
            num_cpus=self.cpus_per_worker,
            num_gpus=self.gpus_per_worker if tp == 1 else 0,  # with tp > 1 vLLM's own workers hold the GPUs
            max_restarts=0,  # restarts are ours: a new worker must also get the current weights
            max_task_retries=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                self._group,
                placement_group_bundle_index=bundles[0],
                placement_group_capture_child_tasks=tp > 1,
            ),
            runtime_env={"env_vars": env} if env else None,
        ).remote(spec, index)

    def _await_ready(self, index: int) -> dict[str, Any]:
        import ray

        try:
            return ray.get(self._actors[index].info.remote(), timeout=self.startup_timeout_s)
        except ray.exceptions.GetTimeoutError as err:
            raise RolloutWorkerError(
                f"rollout worker {index} did not start within {self.startup_timeout_s:.0f} s"
            ) from err
        except ray.exceptions.RayActorError as err:
            raise RolloutWorkerError(
                f"rollout worker {index} failed to start ({self.spec.backend} engine for "
                f"{self.spec.model.model_name_or_path}): {err}"
            ) from err

    def _restart(self, index: int, version: int, cause: str) -> None:
        import ray

        self.restarts += 1
        if self.max_restarts is not None and self.restarts > self.max_restarts:
            raise RolloutWorkerError(
                f"rollout worker {index} died {cause}; the pool already restarted workers {self.max_restarts} "
                f"times (max_restarts) and gives up. Look for the cause in the worker logs above (out of "
                f"memory, a lost node) before resuming from the last checkpoint."
            )
        old_pid = self._info[index]["pid"] if index < len(self._info) else "?"
        logger.warning(
            "rollout worker %d (pid %s) died %s; restarting it (restart %d)",
            index,
            old_pid,
            cause,
            self.restarts,
        )
        with contextlib.suppress(Exception):
            ray.kill(self._actors[index], no_restart=True)
        self._actors[index] = self._create(index)
        self._info[index] = self._await_ready(index)
        for payload in self._log.handles():
            ray.get(
                self._actors[index].update_weights.remote(payload, version), timeout=self.startup_timeout_s
            )
        logger.warning(
            "rollout worker %d back (pid %s) at policy version %d", index, self._info[index]["pid"], version
        )

    def _submit(
        self, worker: int, task: tuple[list[int], SamplingParams, list[WireRequest], list[Any]]
    ) -> Any:
        _, sampling, wire, videos = task
        return self._actors[worker].generate.remote(wire, sampling, self.policy_version, *videos)

    def _check_versions(self, worker: int, groups: list[list[Completion]]) -> None:
        stale = {c.policy_version for group in groups for c in group} - {self.policy_version}
        if stale:
            raise StaleWeightsError(
                f"rollout worker {worker} returned completions of policy version(s) {sorted(stale)}, "
                f"expected {self.policy_version}"
            )


def _wire(
    requests: Sequence[RolloutRequest], shard: Sequence[int], videos: Mapping[int, Any]
) -> tuple[list[WireRequest], list[Any]]:
    """A shard as sent to a worker: requests without their videos, plus the shard's video refs (deduplicated)."""
    wire: list[WireRequest] = []
    refs: list[Any] = []
    slots: dict[int, int] = {}
    for index in shard:
        request = requests[index]
        slot = None
        if request.video is not None:
            key = id(request.video)
            if key not in slots:
                slots[key] = len(refs)
                refs.append(videos[key])
            slot = slots[key]
        wire.append(
            (
                request.prompt,
                request.num_samples,
                request.request_id,
                slot,
                request.constraint,
                request.readout,
            )
        )
    return wire, refs
