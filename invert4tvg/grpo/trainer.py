"""The GRPO loop (Invert4TVG's Algorithm 1 with TRL's GRPO update), built on accelerate.

One step: draw the step's tasks (TVG with probability p, else one inversion task), build instances from a batch of
records, generate ``num_generations`` completions per instance, score them with the task-dispatching reward, compute
group-relative advantages, run ``num_iterations`` clipped-surrogate updates over the same rollouts (the video
tensors travel with the batch into every pass), and sync the new weights to the rollout engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch

from invert4tvg.config import GRPOArguments
from invert4tvg.grpo import modelprep
from invert4tvg.grpo.batch import StepBatch
from invert4tvg.grpo.experience import Rollouts, grounding_spans, rollout_requests, score_rollouts
from invert4tvg.grpo.loss import LossConfig, aggregate, compute_advantages, loss_normalizer, per_token_loss
from invert4tvg.grpo.sampling_correction import SamplingCorrection
from invert4tvg.grpo.step_metrics import gather_for_metrics, step_metrics
from invert4tvg.modeling.shared_prefix import check_attention, micro_batches, pack_groups
from invert4tvg.policy.base import Policy
from invert4tvg.rollout.base import RolloutEngine, SamplingParams
from invert4tvg.training import distributed as dist
from invert4tvg.training import fsdp
from invert4tvg.training.base import TrainerBase
from invert4tvg.training.guards import NonFiniteError, last_good_checkpoint
from invert4tvg.training.phases import StepTimer

logger = logging.getLogger(__name__)


class NonFiniteLossError(NonFiniteError):
    pass


class GRPOTrainer(TrainerBase):
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
        super().__init__(policy, records, args, accelerator, max_bad_video_fraction, evaluate)
        self.engine = engine
        self.score = score
        self.sampler = sampler
        self.build_instances = build_instances
        self.frame_cache = frame_cache
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
        self.counters: dict[str, int] = {"parse_failures": 0, "zero_std_groups": 0, "skipped_steps": 0}
        modelprep.check_master_weights(policy.model)
        if args.shared_prefix:
            check_attention(policy.model)  # before any rollout, not at the first update
        if args.disable_dropout:
            modelprep.disable_dropout(policy.model)
        # A head with a loss of its own (loc, meco) may keep it as an auxiliary term (0: none).
        self.aux_loss_weight = policy.prepare_rl(args.head_aux_loss_weight)
        # The reference copy is taken before accelerator.prepare wraps the model.
        sharded = fsdp.enabled(args, accelerator)
        self.ref_model = (
            modelprep.build_reference(policy.model, accelerator, sharded=sharded)
            if args.beta != 0.0
            else None
        )
        self.prepare(updates_per_step=args.num_iterations)
        if sharded:
            if self.ref_model is not None:  # the skeleton filled from the policy's shards
                self.ref_model = fsdp.shard_reference(self.ref_model, self.model, accelerator)
            if getattr(engine, "shares_model", False):
                fsdp.generate_gathered(engine, self.model)  # one all-gather per generate call
            else:  # an engine with its own copy starts from the weights the processes now share
                engine.update_weights(self._sync_weights(), engine.policy_version)
        modelprep.check_devices(accelerator.device, {"policy": policy.model, "reference": self.ref_model})

    def _ref_context(self):
        """Reference passes: the frozen copy carries the policy's autocast itself; with LoRA the policy itself runs
        with the reference adapter (or with adapters disabled), see ``modelprep.build_reference``."""
        return modelprep.reference_context(self.accelerator.unwrap_model(self.model), self.ref_model)

    # -- state ----------------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler.state_dict(),
            # The VC mask generator and the fallback counts follow each process's own records.
            "sampler_by_process": dist.gather_objects(self.accelerator, self.sampler.state_dict()),
            "counters": dict(self.counters),
            "policy_version": self.engine.policy_version,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        by_process = state.get("sampler_by_process") or []
        rank = self.accelerator.process_index
        self.sampler.load_state_dict(
            by_process[rank] if len(by_process) == self.accelerator.num_processes else state["sampler"]
        )
        self.counters.update(state["counters"])
        self.engine.update_weights(self._sync_weights(), state["policy_version"])

    # -- the loop (TrainerBase.train) ----------------------------------------------------------------------
    progress_label = "GRPO"
    progress_keys = ("reward", "iou")

    def after_step(self, metrics: dict[str, Any]) -> None:
        metrics.update(getattr(self.engine, "stats", dict)())  # e.g. rollout/restarts of a Ray pool

    def after_training(self) -> None:
        # The final save_pretrained (recipes) then holds only the trained adapter.
        modelprep.drop_reference_adapter(self.accelerator.unwrap_model(self.model))

    def train_step(self) -> dict[str, Any] | None:
        """One GRPO step, phase by phase (each timed as ``time/<phase>``); None when the step is skipped."""
        timer = StepTimer()
        with timer.phase("step"):
            # 1. This process's records and tasks (TVG with probability p, else one inversion task per step).
            records = self.stream.next_batch()
            tasks = self.sampler.draw(len(records) * self.accelerator.num_processes)
            rank, share = self.accelerator.process_index, len(records)
            tasks = tasks[rank * share : (rank + 1) * share]
            # 2. Decode the videos (replacing unreadable ones); a step no process can fill is skipped by all.
            with timer.phase("video"):
                loaded = self._load_share(records, tasks)
            if loaded is None:
                self.counters["skipped_steps"] += 1
                logger.warning(
                    "step %d skipped: a process has no full batch of readable videos", self.step + 1
                )
                return None
            # 3. G completions per instance from the rollout engine.
            with timer.phase("rollout"):
                requests = rollout_requests(
                    self.policy, loaded.instances, loaded.videos, self.args.num_generations
                )
                completions = self.engine.generate(requests, self.sampling)
            # 4. The head reads each completion (its span), the rewards score it.
            with timer.phase("reward"):
                rollouts = score_rollouts(
                    self.policy,
                    self.score,
                    loaded.instances,
                    requests,
                    completions,
                    self.args.num_generations,
                )
                rollouts.bad_videos = loaded.bad_videos
            # 5. Group-relative advantages.
            with timer.phase("advantages"):
                advantages = compute_advantages(
                    rollouts.rewards,
                    self.args.num_generations,
                    self.args.scale_rewards,
                    self._batch_std(rollouts.rewards),
                )
            # 6. Everything the loss reads, once: layout, old / reference log-probs, normaliser, weights, spans.
            with timer.phase("logprobs"):
                batch = self.prepare_batch(rollouts, advantages.values)
            # 7. num_iterations clipped-surrogate updates over the batch.
            with timer.phase("update"):
                update_stats = self.optimise(batch)
            # 8. The rollout engine serves the new weights.
            with timer.phase("sync"):
                self.engine.update_weights(self._sync_weights(), self.engine.policy_version + 1)
        rollouts.timings = timer.metrics()
        rollouts, advantages = gather_for_metrics(self.accelerator, rollouts, advantages)
        self.counters["zero_std_groups"] += advantages.zero_std_groups
        metrics = step_metrics(
            rollouts,
            advantages,
            update_stats,
            self.sampler,
            self.video_budget,
            timer.seconds["step"],
            epoch=self.stream.epoch_progress,
            lr=self.scheduler.get_last_lr()[0],
        )
        self.counters["parse_failures"] += metrics.get("parse_failures", 0)
        return metrics

    def _load_share(self, records: Sequence[Any], tasks: Sequence[str]) -> dist.LoadedShare | None:
        """This process's instances with decoded videos (see ``training/distributed.py``); None, on every process at
        once, when some process could not fill its batch."""
        failed_before = set(self.video_budget.failed)
        share = dist.load_share(
            records,
            tasks,
            self.build_instances,
            self.frame_cache,
            self.stream.items,
            dist.replacement_rng(self.args.seed, self.step, self.accelerator.process_index),
            known_bad=failed_before,
        )
        dist.record_failures(self.accelerator, self.video_budget, share)
        # With several processes every one needs a full share (equal micro-batch counts for DDP's collectives).
        needed = len(records) if self.accelerator.num_processes > 1 else 1
        if not dist.all_processes(self.accelerator, len(share.instances) >= needed):
            return None
        share.bad_videos = sorted(set(self.video_budget.failed) - failed_before)
        return share

    def _batch_std(self, rewards: torch.Tensor) -> torch.Tensor | None:
        if self.args.scale_rewards != "batch" or self.accelerator.num_processes == 1:
            return None
        gathered = self.accelerator.gather(rewards.to(self.accelerator.device))
        return gathered[~torch.isnan(gathered)].std().cpu()

    def _sync_weights(self):
        return None if getattr(self.engine, "shares_model", False) else self.policy.named_weights_for_sync()

    # -- the update -----------------------------------------------------------------------------------------
    def prepare_batch(self, rollouts: Rollouts, advantages: torch.Tensor) -> StepBatch:
        """The step's :class:`StepBatch`: the no-grad passes (old policy when the rollouts are reused, reference when
        there is a KL term) and everything else the loss reads, on the training device."""
        device = self.accelerator.device
        sequences = rollouts.batch.to(device)
        mask = sequences.completion_mask.float()
        if self.args.mask_truncated_completions:
            mask = mask * (~rollouts.truncated.to(device)).float().unsqueeze(-1)
        # One mode for every pass (the engine may have left eval mode), and the no-grad passes go through the
        # unwrapped model: a DDP forward runs collectives that every process would have to match.
        self.model.train()
        unwrapped = self.accelerator.unwrap_model(self.model)
        group = 1
        if self.args.shared_prefix:  # one row per group: its prompt and video once, then the G completions
            group = self.args.num_generations
            sequences = pack_groups(sequences, group, unwrapped)
        # TRL's micro-batch: per_device_train_batch_size completions (whole groups with a shared prefix)
        micro = micro_batches(len(sequences), self.args.per_device_train_batch_size, group)
        old_logps = None
        if self.args.num_iterations > 1:
            old_logps = self._logprobs_no_grad(unwrapped, sequences, micro)
        ref_logps = None
        if self.args.beta != 0.0:
            with self._ref_context():
                ref_logps = self._logprobs_no_grad(self.ref_model or unwrapped, sequences, micro)
        global_tokens = None
        if self.loss_config.loss_type == "dapo":  # TRL: the completion tokens of all processes
            global_tokens = dist.reduce_sum(self.accelerator, mask.sum().reshape(1))[0]
        return StepBatch(
            sequences=sequences,
            mask=mask,
            advantages=advantages.to(device),
            old_logps=old_logps,
            ref_logps=ref_logps,
            normalizer=loss_normalizer(mask, self.loss_config, self.accelerator.num_processes, global_tokens),
            correction=self._sampling_correction(rollouts, sequences.completion_ids.shape[1], device),
            spans=grounding_spans(rollouts.columns) if self.aux_loss_weight else None,
            micro_batches=micro,
        )

    def optimise(self, batch: StepBatch) -> dict[str, float]:
        """``num_iterations`` optimizer steps over ``batch``, each accumulating the gradient of every micro-batch;
        returns the step's loss, KL, clipping and sampling metrics over all processes."""
        iterations, micro = self.args.num_iterations, batch.micro_batches
        totals = dict.fromkeys(("loss", "kl", "clipped", "clipped_low", "clipped_high", "head_loss"), 0.0)
        for _ in range(iterations):
            for k, rows in enumerate(micro):
                # Gradients are all-reduced once per update, at the last micro-batch's backward.
                sync = nullcontext() if k == len(micro) - 1 else self.accelerator.no_sync(self.model)
                with sync:
                    loss, stats = self._micro_loss(batch, rows)
                    if "head_loss" in stats:
                        head_loss = stats["head_loss"]
                        loss = loss + self.aux_loss_weight * head_loss / len(micro)
                        totals["head_loss"] += head_loss.item() / len(micro) / iterations
                    self.accelerator.backward(loss)
                m = batch.mask[rows]
                totals["loss"] += loss.item() / iterations
                for key in ("kl", "clipped", "clipped_low", "clipped_high"):  # token sums
                    if key in stats:
                        totals[key] += (stats[key] * m).sum().item() / iterations
            if self.args.max_grad_norm:
                self.accelerator.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        # Logged over all processes: the loss DDP optimises (the mean of the processes' losses), token-weighted KL
        # and clipping.
        sums = torch.tensor(
            [totals[k] for k in ("loss", "kl", "clipped", "clipped_low", "clipped_high")]
            + [float(batch.mask.sum())],
            dtype=torch.float64,
        )
        loss_sum, kl_sum, clipped_sum, low_sum, high_sum, tokens = dist.reduce_sum(
            self.accelerator, sums
        ).tolist()
        tokens = max(tokens, 1.0)
        head = {}
        if batch.spans is not None:  # the head's supervised loss on this process's grounding completions
            head_sum = dist.reduce_sum(self.accelerator, torch.tensor([totals["head_loss"]])).item()
            head = {"head_loss": head_sum / self.accelerator.num_processes}
        return {
            **head,
            "loss": loss_sum / self.accelerator.num_processes,
            "kl": kl_sum / tokens,
            "clip_ratio/region_mean": clipped_sum / tokens,  # TRL's names
            "clip_ratio/low_mean": low_sum / tokens,
            "clip_ratio/high_mean": high_sum / tokens,
            **batch.correction.metrics(),
        }

    def _micro_loss(self, batch: StepBatch, rows: list[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Micro-batch ``rows``: its loss (divided by the whole batch's normaliser) and per-token stats, from one
        policy forward; with the head's auxiliary loss on, ``stats["head_loss"]`` from the same forward."""
        spans = None if batch.spans is None else [batch.spans[r] for r in rows]
        logps, head_loss = self.policy.rl_logprobs(
            self.model, batch.sequences.select(rows), self.args.temperature, spans
        )
        old = batch.old_logps[rows] if batch.old_logps is not None else logps.detach()
        ref = batch.ref_logps[rows] if batch.ref_logps is not None else None
        mask = batch.mask[rows]
        weights = batch.correction.weights(rows, old, mask)
        loss, stats = per_token_loss(logps, old, batch.advantages[rows], mask, self.loss_config, ref, weights)
        norm = batch.normalizer
        if isinstance(norm, torch.Tensor) and norm.dim():
            norm = norm[rows]
        loss = aggregate(loss, mask, norm, self.loss_config)
        if head_loss is not None:
            stats["head_loss"] = head_loss
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite loss ({loss.item()}) at step {self.step + 1}; the run stops. Last good checkpoint: "
                f"{last_good_checkpoint(self.run_dir)}. Lower the learning rate or check the rewards."
            )
        return loss, stats

    def _sampling_correction(self, rollouts: Rollouts, width: int, device) -> SamplingCorrection:
        """Engine vs trainer log-probabilities (logged every step); TRL's importance-sampling correction applies
        when the engine generates with a model copy of its own (vLLM, Ray workers)."""
        args = self.args
        own_copy = not getattr(self.engine, "shares_model", False)
        return SamplingCorrection(
            rollouts.completions,
            width,
            device,
            apply=args.vllm_importance_sampling_correction and own_copy,
            mode=args.vllm_importance_sampling_mode,
            clip_min=args.vllm_importance_sampling_clip_min,
            clip_max=args.vllm_importance_sampling_clip_max,
        )

    @torch.no_grad()
    def _logprobs_no_grad(self, model, batch, micro: list[list[int]]) -> torch.Tensor:
        width = batch.completion_ids.shape[1]
        out = torch.zeros(len(batch), width, device=batch.completion_ids.device)
        for rows in micro:
            out[rows] = self.policy.completion_logprobs(model, batch.select(rows), self.args.temperature)
        return out
