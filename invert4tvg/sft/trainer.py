"""Supervised warm start through the policy interface: grounding answers and the paper's Invert-SFT.

A TVG example asks the grounding prompt about the whole video and targets the head's answer (for text timestamps
``<think>...</think> <answer>S to E</answer>``). An Invert-SFT example (Invert4TVG appendix D) feeds the ground-truth
clip with the video-description prompt and targets the query itself. Each head supplies its own targets and loss, so
the same loop warm-starts every head.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch

from invert4tvg.config import SFTArguments
from invert4tvg.data.cache import FrameCache
from invert4tvg.data.records import GroundingRecord
from invert4tvg.policy.base import Policy, SupervisedExample
from invert4tvg.tasks import TaskInstance, TaskUnavailable
from invert4tvg.training.base import TrainerBase
from invert4tvg.training.batch_videos import load_videos
from invert4tvg.training.distributed import all_processes
from invert4tvg.training.guards import NonFiniteError, last_good_checkpoint
from rewards import nlp

logger = logging.getLogger(__name__)


def supervised_example(
    policy: Policy, record: GroundingRecord, instance: TaskInstance, video
) -> SupervisedExample:
    """The SFT target for an instance: the grounding answer for ``tvg``; for an inversion prompt the query (VD, VC)
    or the query's first action verb as written (AR)."""
    if instance.task == "tvg":
        target = policy.tvg_target(record.query, record.start, record.end, record.duration)
        return SupervisedExample(
            instance.messages, video, target, span=(record.start, record.end), duration=record.duration
        )
    if instance.task == "ar":
        start, end, _ = nlp.action_verb_spans([record.query])[0][0]  # "sneezing", not "begins"
        target = policy.answer_target(record.query[start:end])
    else:
        target = policy.answer_target(record.query.strip())
    return SupervisedExample(messages=instance.messages, video=video, target=target)


class SFTTrainer(TrainerBase):
    def __init__(
        self,
        policy: Policy,
        records: Sequence[GroundingRecord],
        build_instance: Callable[[GroundingRecord, str], TaskInstance],
        args: SFTArguments,
        accelerator,
        frame_cache: FrameCache | None = None,
        max_bad_video_fraction: float = 0.05,
        grounding_records: Sequence[GroundingRecord] = (),
    ) -> None:
        super().__init__(policy, records, args, accelerator, max_bad_video_fraction)
        self.grounding_records = list(grounding_records)  # non-empty: grounding examples are drawn from these
        self.build_instance = build_instance
        self.frame_cache = frame_cache
        self.rng = random.Random(args.seed)
        self.fallbacks = 0  # Invert-SFT examples that became grounding examples
        self.prepare()

    def _examples(self, records: Sequence[GroundingRecord]) -> list[SupervisedExample]:
        instances, records = [], list(records)
        for k, record in enumerate(records):
            task = "tvg"
            if self.rng.random() < self.args.invert_sft_fraction:
                task = self.rng.choice(self.args.invert_sft_tasks)
            elif self.grounding_records:
                record = records[k] = self.rng.choice(self.grounding_records)
            try:
                instances.append(self.build_instance(record, task))
            except TaskUnavailable:  # no verb in the query, or an empty clip: train its grounding instead
                self.fallbacks += 1
                instances.append(self.build_instance(record, "tvg"))
        by_id = {r.id: r for r in records}
        kept, videos = load_videos(instances, self.frame_cache, self.video_budget)
        return [supervised_example(self.policy, by_id[i.record_id], i, v) for i, v in zip(kept, videos)]

    def extra_state(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate(), "fallbacks": self.fallbacks}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.fallbacks = state["fallbacks"]

    # -- the loop (TrainerBase.train) ----------------------------------------------------------------------
    progress_label = "SFT"

    def before_training(self) -> None:
        self.model.train()

    def train_step(self) -> dict[str, Any] | None:
        t0 = time.perf_counter()
        examples = self._examples(self.stream.next_batch())
        # With several processes a step is skipped by all of them or by none (DDP's collectives must match), and
        # every process runs gradient_accumulation_steps micro-batches.
        accumulation = self.args.gradient_accumulation_steps
        if not all_processes(self.accelerator, len(examples) >= accumulation):
            return None
        loss, parts, target_tokens = self._accumulate(examples, accumulation)
        if self.args.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {
            "epoch": round(self.stream.epoch_progress, 4),
            "loss": loss,
            **parts,
            "learning_rate": self.scheduler.get_last_lr()[0],
            "target_tokens": target_tokens,
            "bad_videos": len(self.video_budget.failed),
            "invert_fallbacks": self.fallbacks,
            "time/step": time.perf_counter() - t0,
        }

    def _accumulate(self, examples: list[SupervisedExample], accumulation: int) -> tuple[float, dict, int]:
        """Forward/backward over ``accumulation`` micro-batches (TRL's gradient_accumulation_steps). Each
        micro-batch's loss (a mean over its target tokens) is weighted by its share of the step's target tokens, so
        the gradient is that of the whole batch's token mean, as transformers' Trainer does. Gradients are
        all-reduced once, at the last micro-batch."""
        size = -(-len(examples) // accumulation)
        chunks = [examples[i : i + size] for i in range(0, len(examples), size)]
        # Every process runs the same number of backward passes (DDP); a process with fewer examples than
        # micro-batches runs weightless ones.
        chunks += [[]] * (accumulation - len(chunks))
        batches = [self.policy.supervised_batch(chunk or examples[:1]) for chunk in chunks]
        counts = [int((labels != -100).sum()) if chunk else 0 for chunk, (_, labels) in zip(chunks, batches)]
        tokens = max(sum(counts), 1)
        total, parts_sum = 0.0, {}
        for k, ((inputs, labels), chunk) in enumerate(zip(batches, chunks)):
            weight = counts[k] / tokens
            sync = nullcontext() if k == len(chunks) - 1 else self.accelerator.no_sync(self.model)
            with sync:
                inputs, labels = inputs.to(self.accelerator.device), labels.to(self.accelerator.device)
                loss, parts = self.policy.supervised_loss(
                    self.model,
                    inputs,
                    labels,
                    epoch=self.stream.epoch_progress,
                    examples=chunk or examples[:1],
                )
                if not torch.isfinite(loss):
                    raise NonFiniteError(
                        f"non-finite SFT loss at step {self.step + 1}; the run stops. Last good checkpoint: "
                        f"{last_good_checkpoint(self.run_dir)}. Lower the learning rate."
                    )
                self.accelerator.backward(loss * weight)
            total += loss.item() * weight
            for name, value in parts.items():
                parts_sum[name] = parts_sum.get(name, 0.0) + float(value) * weight
        return total, parts_sum, sum(counts)
