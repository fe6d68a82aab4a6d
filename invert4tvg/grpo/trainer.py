"""The GRPO loop (Invert4TVG's Algorithm 1 with TRL's GRPO update), built on accelerate.

One step: draw the step's tasks (TVG with probability p, else one inversion task), build instances from a batch of
records, generate ``num_generations`` completions per instance, score them with the task-dispatching reward, compute
group-relative advantages, run ``num_iterations`` clipped-surrogate updates over the same rollouts (the video
tensors travel with the batch into every pass), and sync the new weights to the rollout engine.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from invert4tvg.config import GRPOArguments
from invert4tvg.grpo import checkpoint as ckpt
from invert4tvg.grpo.loss import LossConfig, aggregate, compute_advantages, loss_normalizer, per_token_loss
from invert4tvg.grpo.metrics import step_metrics
from invert4tvg.grpo.optim import build_optimizer
from invert4tvg.grpo.rollouts import Rollouts, VideoFailureBudget, collect_rollouts
from invert4tvg.grpo.stream import BatchStream
from invert4tvg.policy.base import Policy
from invert4tvg.rollout.base import RolloutEngine, SamplingParams
from invert4tvg.runs import MetricsLog

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    pass


class GRPOTrainer:
    def __init__(
        self,
        policy: Policy,
        engine: RolloutEngine,
        score: Callable[..., tuple[list[float | None], dict[str, list[float | None]]]],
        sampler,
        build_instances: Callable[[Sequence[Any], Sequence[str]], list],
        records: Sequence[Any],
        args: GRPOArguments,
        accelerator,
        frame_cache=None,
        max_bad_video_fraction: float = 0.05,
        evaluate: Callable[[int], dict[str, float]] | None = None,
    ) -> None:
        self.policy = policy
        self.engine = engine
        self.score = score
        self.sampler = sampler
        self.build_instances = build_instances
        self.args = args
        self.accelerator = accelerator
        self.frame_cache = frame_cache
        self.evaluate = evaluate
        self.run_dir = Path(args.output_dir)
        self.stream = BatchStream(
            records,
            args.per_device_train_batch_size,
            args.seed,
            accelerator.num_processes,
            accelerator.process_index,
        )
        self.total_steps = (
            args.max_steps
            if args.max_steps > 0
            else math.ceil(args.num_train_epochs * self.stream.steps_per_epoch)
        )
        self.loss_config = LossConfig(
            loss_type=args.loss_type,
            beta=args.beta,
            epsilon=args.epsilon,
            epsilon_high=args.epsilon_high,
            importance_sampling_level=args.importance_sampling_level,
            max_completion_length=args.max_completion_length,
            use_bias_correction_kl=args.use_bias_correction_kl,
        )
        self.sampling = SamplingParams(
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            max_tokens=args.max_completion_length,
        )
        self.video_budget = VideoFailureBudget(max_bad_video_fraction)
        self.counters: dict[str, int] = {"parse_failures": 0, "zero_std_groups": 0, "skipped_steps": 0}
        self.ref_model = self._reference_model() if args.beta != 0.0 else None
        optimizer, scheduler = build_optimizer(policy.model, args, self.total_steps, args.num_iterations)
        self.model, self.optimizer, self.scheduler = accelerator.prepare(policy.model, optimizer, scheduler)
        self.log = MetricsLog(self.run_dir, accelerator, accelerator.is_main_process)
        self.step = 0

    def _reference_model(self) -> torch.nn.Module | None:
        """The initial weights: with LoRA the base with adapters disabled (no copy), otherwise a frozen copy."""
        if hasattr(self.policy.model, "disable_adapter"):
            return None
        ref = copy.deepcopy(self.policy.model).eval()
        ref.requires_grad_(False)
        return ref

    def _ref_context(self):
        if self.ref_model is None and hasattr(self.policy.model, "disable_adapter"):
            return self.accelerator.unwrap_model(self.model).disable_adapter()
        return nullcontext()

    # -- state ----------------------------------------------------------------------------------------------
    def trainer_state(self) -> dict[str, Any]:
        return {
            "stream": self.stream.state_dict(),
            "sampler": self.sampler.state_dict(),
            "video_budget": self.video_budget.state_dict(),
            "counters": dict(self.counters),
            "policy_version": self.engine.policy_version,
            "total_steps": self.total_steps,
        }

    def save(self) -> Path:
        return ckpt.save_checkpoint(
            self.run_dir,
            self.step,
            self.accelerator,
            self.model,
            self.policy.processor,
            self.optimizer,
            self.scheduler,
            self.trainer_state(),
            self.args.save_total_limit,
        )

    def resume(self, resume: str) -> None:
        path = ckpt.find_checkpoint(self.run_dir, resume)
        state = ckpt.load_checkpoint(path, self.accelerator, self.model, self.optimizer, self.scheduler)
        self.step = state["step"]
        self.stream.load_state_dict(state["stream"])
        self.sampler.load_state_dict(state["sampler"])
        self.video_budget.load_state_dict(state["video_budget"])
        self.counters.update(state["counters"])
        self.engine.update_weights(self._sync_weights(), state["policy_version"])
        self.log.truncate_after(self.step)

    # -- the loop -------------------------------------------------------------------------------------------
    def train(self) -> list[dict[str, Any]]:
        if self.args.resume:
            self.resume(self.args.resume)
        history = []
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="GRPO",
            disable=not self.accelerator.is_main_process,
            dynamic_ncols=True,
        )
        while self.step < self.total_steps:
            metrics = self.train_step()
            self.step += 1
            bar.update(1)
            if metrics is None:
                continue
            bar.set_postfix({k: f"{metrics[k]:.3f}" for k in ("reward", "iou") if k in metrics})
            if self.evaluate and self.args.eval_steps and self.step % self.args.eval_steps == 0:
                metrics.update({f"eval/{k}": v for k, v in self.evaluate(self.step).items()})
            if self.step % max(self.args.logging_steps, 1) == 0 or self.step == self.total_steps:
                self.log.log(metrics, self.step)
            history.append(metrics)
            if self.args.save_steps and self.step % self.args.save_steps == 0:
                self.save()
        bar.close()
        return history

    def train_step(self) -> dict[str, Any] | None:
        t_step = time.perf_counter()
        records = self.stream.next_batch()
        tasks = self.sampler.draw(len(records) * self.accelerator.num_processes)
        share = len(records)
        tasks = tasks[self.accelerator.process_index * share : (self.accelerator.process_index + 1) * share]
        instances = self.build_instances(records, tasks)
        rollouts = collect_rollouts(
            instances,
            self.policy,
            self.engine,
            self.score,
            self.sampling,
            self.args.num_generations,
            self.frame_cache,
            self.video_budget,
        )
        if rollouts is None:
            self.counters["skipped_steps"] += 1
            logger.warning("step %d skipped: no readable video in the batch", self.step + 1)
            return None
        advantages = compute_advantages(
            rollouts.rewards,
            self.args.num_generations,
            self.args.scale_rewards,
            self._batch_std(rollouts.rewards),
        )
        self.counters["zero_std_groups"] += advantages.zero_std_groups
        update_stats = self._update(rollouts, advantages.values)
        self.engine.update_weights(self._sync_weights(), self.engine.policy_version + 1)
        elapsed = time.perf_counter() - t_step
        return step_metrics(
            rollouts,
            advantages,
            update_stats,
            self.counters,
            self.sampler,
            self.video_budget,
            elapsed,
            epoch=self.stream.epoch_progress,
            lr=self.scheduler.get_last_lr()[0],
        )

    def _batch_std(self, rewards: torch.Tensor) -> torch.Tensor | None:
        if self.args.scale_rewards != "batch" or self.accelerator.num_processes == 1:
            return None
        gathered = self.accelerator.gather(rewards.to(self.accelerator.device))
        return gathered[~torch.isnan(gathered)].std().cpu()

    def _sync_weights(self):
        return None if getattr(self.engine, "shares_model", False) else self.policy.weights_for_sync()

    def _update(self, rollouts: Rollouts, advantages: torch.Tensor) -> dict[str, float]:
        device = self.accelerator.device
        batch = rollouts.batch.to(device)
        mask = batch.completion_mask.float()
        if self.args.mask_truncated_completions:
            mask = mask * (~rollouts.truncated.to(device)).float().unsqueeze(-1)
        advantages = advantages.to(device)
        micro = [
            list(range(i, min(i + self.args.logprob_batch_size, len(batch))))
            for i in range(0, len(batch), self.args.logprob_batch_size)
        ]
        t0 = time.perf_counter()
        old_logps = self._logprobs_no_grad(self.model, batch, micro) if self.args.num_iterations > 1 else None
        ref_logps = None
        if self.args.beta != 0.0:
            with self._ref_context():
                ref_logps = self._logprobs_no_grad(self.ref_model or self.model, batch, micro)
        t_logprobs = time.perf_counter() - t0
        normalizer = loss_normalizer(mask, self.loss_config, self.accelerator.num_processes)
        totals = {"loss": 0.0, "kl": 0.0, "clipped": 0.0}
        t0 = time.perf_counter()
        self.model.train()
        for _ in range(self.args.num_iterations):
            for rows in micro:
                mb = batch.select(rows)
                logps = self.policy.completion_logprobs(self.model, mb, self.args.temperature)
                old = old_logps[rows] if old_logps is not None else logps.detach()
                ref = ref_logps[rows] if ref_logps is not None else None
                m = mask[rows]
                loss, stats = per_token_loss(logps, old, advantages[rows], m, self.loss_config, ref)
                norm = (
                    normalizer[rows]
                    if isinstance(normalizer, torch.Tensor) and normalizer.dim()
                    else normalizer
                )
                loss = aggregate(loss, m, norm, self.loss_config)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"non-finite loss ({loss.item()}) at step {self.step + 1}; the last good checkpoint is "
                        f"kept in {self.run_dir / 'checkpoints'}. Lower the learning rate or check the rewards."
                    )
                self.accelerator.backward(loss)
                n_tokens = m.sum().clamp(min=1)
                totals["loss"] += loss.item() / self.args.num_iterations
                totals["clipped"] += (stats["clipped"] * m).sum().item() / self.args.num_iterations
                if "kl" in stats:
                    totals["kl"] += (stats["kl"] * m).sum().item() / self.args.num_iterations
                del n_tokens
            if self.args.max_grad_norm:
                self.accelerator.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        tokens = mask.sum().clamp(min=1).item()
        return {
            "loss": totals["loss"],
            "kl": totals["kl"] / tokens,
            "clip_frac": totals["clipped"] / tokens,
            "time/logprobs": t_logprobs,
            "time/update": time.perf_counter() - t0,
        }

    @torch.no_grad()
    def _logprobs_no_grad(self, model, batch, micro: list[list[int]]) -> torch.Tensor:
        width = batch.completion_ids.shape[1]
        out = torch.zeros(len(batch), width, device=batch.completion_ids.device)
        for rows in micro:
            out[rows] = self.policy.completion_logprobs(model, batch.select(rows), self.args.temperature)
        return out
