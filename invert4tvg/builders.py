"""Build the parts of a run from its configuration; recipes, ``invert4tvg eval`` and the demo share these."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from invert4tvg.config import DataArguments, GRPOArguments, ModelArguments, TaskArguments
from invert4tvg.data.cache import FrameCache
from invert4tvg.data.formats import DataError, load_records
from invert4tvg.data.records import GroundingRecord
from invert4tvg.errors import MissingFileError
from invert4tvg.grpo.reward_set import RewardSet
from invert4tvg.policy.base import Policy
from invert4tvg.rollout.base import RolloutEngine
from invert4tvg.rollout.hf import HFEngine
from invert4tvg.rollout.ray_pool import RayEnginePool
from invert4tvg.rollout.vllm_engine import VLLMEngine
from invert4tvg.rollout.worker import EngineSpec
from invert4tvg.tasks import PromptTemplates, TaskSampler
from invert4tvg.tasks.prompts import TEXT_TIMESTAMPS_ANSWER

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def load_split(data: DataArguments, split: str) -> list[GroundingRecord]:
    """The records of ``split``, checked as ``invert4tvg data check`` does (``on_bad_record`` decides between
    failing on the first bad sample and skipping with a count)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    annotations = getattr(data, f"{split}_annotations")
    if not annotations:
        raise ValueError(
            f"no {split}_annotations in the data configuration: set it (or, for invert4tvg eval, give --data DIR "
            "or --annotations FILE)"
        )
    result = load_records(
        data.dataset_format,
        annotations,
        durations=data.durations,
        video_dir=data.video_dir,
        on_error=data.on_bad_record,
        source=data.dataset_source,
        # Evaluation scores every published query against the ground truth as published (issue 18).
        overshoot=data.span_overshoot if split == "train" else "keep",
    )
    overshoot = result.report["overshoot"]
    if overshoot["spans_past_end"] or overshoot["dropped"]:
        logger.warning(
            "%s: %d spans end after their video (up to %.2f s; %s: %d clipped, %d dropped, %d kept as published)",
            annotations,
            overshoot["spans_past_end"] + overshoot["dropped"],
            overshoot["max_seconds_past_end"],
            overshoot["policy"],
            overshoot["clipped"],
            overshoot["dropped"],
            overshoot["kept_as_published"],
        )
    skipped = result.report.get("skipped", 0)
    if skipped:
        logger.warning(
            "%s: %d samples skipped (%s); details: invert4tvg data check --format %s --annotations %s",
            annotations,
            skipped,
            json.dumps(result.report.get("skipped_by_reason", {})),
            data.dataset_format,
            annotations,
        )
    if not result.records:
        skipped = result.report.get("skipped_by_reason") or {}
        why = (
            f"all {sum(skipped.values())} samples were rejected ({json.dumps(skipped)})"
            if skipped
            else "it is empty"
        )
        raise DataError(
            str(annotations),
            "file",
            "no_records",
            f"no usable {split} sample: {why}",
            f"`invert4tvg data check --format {data.dataset_format} --annotations {annotations}` lists the problems.",
        )
    logger.info("%s split: %d records from %s", split, len(result.records), annotations)
    return result.records


def frame_cache(data: DataArguments) -> FrameCache | None:
    if not data.frame_cache_dir:
        return None
    return FrameCache(data.frame_cache_dir, max_bytes=int(data.frame_cache_gb * 2**30))


def load_templates(tasks: TaskArguments, policy: Policy | None = None) -> PromptTemplates:
    """The prompt templates of ``tasks.prompt_templates`` (else the defaults), with ``policy``'s head filling the
    grounding prompt's ``{answer_format}`` (None: the default head's instruction)."""
    templates = PromptTemplates()
    if tasks.prompt_templates:
        path = Path(tasks.prompt_templates)
        if not path.is_file():
            raise MissingFileError(
                f"prompt_templates file {path} not found (relative paths are read from {Path.cwd()}); "
                "give an absolute path or run from the directory the config expects"
            )
        templates = PromptTemplates.from_config(yaml.safe_load(path.read_text()) or {})
    if policy is None:
        return templates
    if "{answer_format}" not in templates.tvg and policy.answer_instruction != TEXT_TIMESTAMPS_ANSWER:
        logger.warning(
            "the tvg prompt template has no {answer_format}, so it does not tell the %s head how to answer (%r); "
            "add the field to %s",
            policy.name,
            policy.answer_instruction,
            tasks.prompt_templates,
        )
    return replace(templates, answer_format=policy.answer_instruction)


def build_sampler(tasks: TaskArguments, seed: int) -> TaskSampler:
    return TaskSampler(
        p=tasks.tvg_probability,
        invert_tasks=tasks.invert_tasks,
        weights=tasks.invert_task_weights,
        mode=tasks.task_sampling,
        seed=seed,
    )


def build_rewards(args: GRPOArguments) -> RewardSet:
    composite = {
        "weights": {
            "format": args.format_reward_weight,
            "vc": args.invert_reward_weight,
            "ar": args.invert_reward_weight,
            "vd": args.invert_reward_weight,
        },
        "inversion": args.invert_reward,
        "inversion_format": args.invert_format,
    }
    return RewardSet(args.reward_funcs, args.reward_weights, composite, on_error=args.reward_error_policy)


def build_engine(
    backend: str,
    policy: Policy,
    max_batch_sequences: int = 64,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    model_args: ModelArguments | None = None,
    seed: int = 0,
    **options: Any,
) -> RolloutEngine:
    """The rollout engine named by ``backend`` (docs/rollouts.md):

    - ``hf``: transformers ``generate`` on the trainer's own model (no copy, no weight transfer);
    - ``vllm``: a vLLM engine in this process, on this GPU (``options`` go to :class:`VLLMEngine`);
    - ``ray-hf`` / ``ray-vllm``: ``workers`` Ray actors, each hosting one of those with its own model copy.
      ``options``: ``cpus_per_worker``, ``gpus_per_worker`` (default 0 for ray-hf, 1 for ray-vllm),
      ``placement_strategy`` (PACK | SPREAD), ``max_retries``, ``max_restarts``, ``generate_timeout_s``,
      ``vllm_options`` (ray-vllm).

    Engines with their own copy are rebuilt from ``model_args`` (the trainer's ``ModelArguments``: same
    checkpoint, LoRA configuration and parameter names) and start from the policy's current trainable weights.
    """
    if backend == "hf":
        if options:
            raise TypeError(f"backend hf takes no options, got {sorted(options)}")
        return HFEngine(policy.model, policy.processor, max_batch_sequences=max_batch_sequences)
    if backend not in ("vllm", "ray-hf", "ray-vllm"):
        raise ValueError(f"unknown rollout backend {backend!r}; use hf, vllm, ray-hf or ray-vllm")
    if model_args is None:
        raise ValueError(
            f"backend {backend} builds its own copy of the model and needs model_args (the run's ModelArguments)"
        )
    # A policy still on the meta device (a sharded run's other processes) has no weights to send yet: the trainer
    # syncs them once the model is sharded.
    initial = None if any(p.is_meta for p in policy.model.parameters()) else policy.weights_for_sync()
    if backend == "vllm":
        engine: RolloutEngine = VLLMEngine(
            model_args, max_batch_sequences=max_batch_sequences, seed=seed, **options
        )
        if initial is not None:
            engine.update_weights(initial, 0)
        return engine

    inner = backend.removeprefix("ray-")
    vllm_options = dict(options.pop("vllm_options", None) or {})
    if inner == "vllm":
        vllm_options.setdefault("seed", seed)
    spec = EngineSpec(
        model=model_args,
        backend=inner,
        max_batch_sequences=max_batch_sequences,
        vllm_options=vllm_options,
    )
    options.setdefault("gpus_per_worker", 1 if inner == "vllm" else 0)
    return RayEnginePool(
        spec,
        workers,
        initial_weights=initial,
        ray_address=ray_address,
        seed=seed,
        **options,
    )
