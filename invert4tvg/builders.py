"""Build the parts of a run from its configuration; recipes, ``invert4tvg eval`` and the demo share these."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from invert4tvg.config import DataArguments, GRPOArguments, TaskArguments
from invert4tvg.data.cache import FrameCache
from invert4tvg.data.formats import load_records
from invert4tvg.data.records import GroundingRecord
from invert4tvg.grpo.reward_set import RewardSet
from invert4tvg.policy.base import Policy
from invert4tvg.rollout.base import RolloutEngine
from invert4tvg.tasks import PromptTemplates, TaskSampler

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def load_split(data: DataArguments, split: str) -> list[GroundingRecord]:
    """The records of ``split``, checked as ``invert4tvg data check`` does (``on_bad_record`` decides between
    failing on the first bad sample and skipping with a count)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    annotations = getattr(data, f"{split}_annotations")
    if annotations is None:
        raise ValueError(f"no {split}_annotations in the data configuration")
    result = load_records(
        data.dataset_format,
        annotations,
        durations=data.durations,
        video_dir=data.video_dir,
        on_error=data.on_bad_record,
        source=data.dataset_source,
    )
    skipped = result.report.get("skipped", 0)
    if skipped:
        logger.warning(
            "%s: %d samples skipped (%s); details: invert4tvg data check --format %s --annotations %s",
            annotations,
            skipped,
            json.dumps(result.report.get("counts", {})),
            data.dataset_format,
            annotations,
        )
    logger.info("%s split: %d records from %s", split, len(result.records), annotations)
    return result.records


def frame_cache(data: DataArguments) -> FrameCache | None:
    if not data.frame_cache_dir:
        return None
    return FrameCache(data.frame_cache_dir, max_bytes=int(data.frame_cache_gb * 2**30))


def load_templates(tasks: TaskArguments) -> PromptTemplates:
    if not tasks.prompt_templates:
        return PromptTemplates()
    path = Path(tasks.prompt_templates)
    return PromptTemplates.from_config(yaml.safe_load(path.read_text()) or {})


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
        "inversion": args.inversion_reward,
    }
    return RewardSet(args.reward_funcs, args.reward_weights, composite, on_error=args.reward_error_policy)


def build_engine(backend: str, policy: Policy, max_batch_sequences: int = 64, **options) -> RolloutEngine:
    """The rollout engine named by ``backend`` (hf | ray-hf | vllm | ray-vllm)."""
    if backend == "hf":
        from invert4tvg.rollout.hf import HFEngine

        return HFEngine(policy.model, policy.processor, max_batch_sequences=max_batch_sequences)
    raise ValueError(f"rollout backend {backend!r} is not available in this build; use 'hf'")
