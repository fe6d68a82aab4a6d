"""What the GRPO and SFT trainers share: the batch stream, the run's length, the optimizer, one save/resume, and
stopping on SIGINT / SIGTERM with a checkpoint.

A trainer subclasses :class:`TrainerBase` and implements :meth:`TrainerBase.train_step` (one step, its metrics row);
the one loop (:meth:`TrainerBase.train`: resume, steps, NaN check, logging, checkpoints, stopping on a signal) is
here. It adds its own resumable state through :meth:`TrainerBase.extra_state` / :meth:`TrainerBase.load_extra_state`
and may use the hooks :meth:`TrainerBase.before_training`, :meth:`TrainerBase.after_step` and
:meth:`TrainerBase.after_training`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from invert4tvg.config import TrainingArguments
from invert4tvg.policy.base import Policy
from invert4tvg.training import checkpoint as ckpt
from invert4tvg.training import fsdp, sharded_checkpoint
from invert4tvg.training.batch_videos import VideoFailureBudget
from invert4tvg.training.guards import check_parameters
from invert4tvg.training.optim import build_optimizer
from invert4tvg.training.output_dir import write_final
from invert4tvg.training.run_log import MetricsLog
from invert4tvg.training.stops import RunInterrupted, StopSignals
from invert4tvg.training.stream import BatchStream


class TrainerBase:
    #: The progress bar's label and the metrics it shows.
    progress_label: str = "train"
    progress_keys: tuple[str, ...] = ("loss",)

    def __init__(
        self,
        policy: Policy,
        records: Sequence[Any],
        args: TrainingArguments,
        accelerator,
        max_bad_video_fraction: float = 0.05,
    ) -> None:
        self.policy = policy
        self.args = args
        self.accelerator = accelerator
        self.run_dir = Path(args.output_dir)
        self.stream = BatchStream(
            records,
            args.records_per_step,
            args.seed,
            accelerator.num_processes,
            accelerator.process_index,
        )
        self.total_steps = (
            args.max_steps
            if args.max_steps > 0
            else math.ceil(args.num_train_epochs * self.stream.steps_per_epoch)
        )
        self.video_budget = VideoFailureBudget(
            max_bad_video_fraction, total=len({getattr(r, "video", None) for r in records})
        )
        self.step = 0

    def prepare(self, updates_per_step: int = 1) -> None:
        """Build the optimizer and schedule, wrap the model (DDP/FSDP/DeepSpeed) and open the metric log. Called by
        the subclass once the model is final (GRPO first copies the reference model from it)."""
        if fsdp.enabled(self.args, self.accelerator):
            # Sharded in place (FSDP2); the optimizer is built on the sharded parameters, outside accelerate.
            self.model = fsdp.shard(self.policy.model, self.accelerator)
            self.optimizer, self.scheduler = build_optimizer(
                self.model, self.args, self.total_steps, updates_per_step
            )
        else:
            optimizer, scheduler = build_optimizer(
                self.policy.model, self.args, self.total_steps, updates_per_step
            )
            # The scheduler stays out of accelerator.prepare: its wrapper steps it once per process per call, which
            # would run the schedule num_processes times too fast (every process steps its own copy once per update).
            self.model, self.optimizer = self.accelerator.prepare(self.policy.model, optimizer)
            self.scheduler = scheduler
        self.log = MetricsLog(self.run_dir, self.accelerator, self.accelerator.is_main_process)

    # -- resumable state ------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """The subclass's own resumable state (plain JSON values)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved; ``state`` is the whole ``trainer_state.json``."""

    def trainer_state(self) -> dict[str, Any]:
        return {
            "stream": self.stream.state_dict(),
            "video_budget": self.video_budget.state_dict(),
            "total_steps": self.total_steps,
            **self.extra_state(),
        }

    def save(self) -> Path:
        unwrapped = self.accelerator.unwrap_model(self.model)
        check_parameters(
            unwrapped, self.step, self.run_dir, what="before saving step"
        )  # never checkpoint NaN
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
            head_config=self.policy.head_config(),
        )

    def save_final(self) -> Path | None:
        """``output_dir/final``: the trained model, its processor and its head's record. Every process calls it (a
        sharded model is gathered into one fp32 state dict); the main process writes it and returns its path."""
        model = self.accelerator.unwrap_model(self.model)
        state_dict = None
        if fsdp.is_sharded(model):
            check_parameters(model, self.step, self.run_dir, what="before saving final/ at step")
            state_dict = sharded_checkpoint.full_state_dict(model)
        if not self.accelerator.is_main_process:
            return None
        return write_final(
            model, self.policy.processor, self.run_dir, self.step, self.policy.head_config(), state_dict
        )

    def resume(self, resume: str) -> None:
        """Restore weights, optimizer, schedule, RNG, data position and the subclass's state; metric rows logged
        after the checkpoint's step are dropped (they are logged again)."""
        path = ckpt.find_checkpoint(self.run_dir, resume)
        state = ckpt.load_checkpoint(path, self.accelerator, self.model, self.optimizer, self.scheduler)
        self.step = state["step"]
        self.stream.load_state_dict(state["stream"])
        self.video_budget.load_state_dict(state["video_budget"])
        self.load_extra_state(state)
        self.log.truncate_after(self.step)

    def stop_if_requested(self, stops: StopSignals) -> None:
        """After SIGINT / SIGTERM (on any process): save a checkpoint of the last finished step and stop."""
        signum = stops.requested(self.accelerator)
        if signum is None:
            return
        saved = None
        if self.step > 0:
            saved = self.run_dir / "checkpoints" / f"step_{self.step}"
            if not saved.is_dir():
                saved = self.save()
        raise RunInterrupted(signum, self.step, saved)

    # -- the loop -------------------------------------------------------------------------------------------
    def train(self) -> list[dict[str, Any]]:
        """Train to ``total_steps``; SIGINT / SIGTERM stop it after the current step with a checkpoint
        (:mod:`invert4tvg.training.stops`). Returns the metrics rows of the steps run."""
        with StopSignals() as stops:
            history = self._train_loop(stops)
        self.after_training()
        return history

    def train_step(self) -> dict[str, Any] | None:
        """One step: its metrics row, or None when every process skipped it."""
        raise NotImplementedError

    def before_training(self) -> None:
        """Hook: after a resume, before the first step."""

    def after_step(self, metrics: dict[str, Any]) -> None:
        """Hook: add to a step's metrics row before it is logged (``self.step`` counts the step)."""

    def after_training(self) -> None:
        """Hook: after the last step."""

    def _train_loop(self, stops: StopSignals) -> list[dict[str, Any]]:
        if self.args.resume_from_checkpoint:
            self.resume(self.args.resume_from_checkpoint)
        history = []
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=self.progress_label,
            disable=not self.accelerator.is_main_process,
            dynamic_ncols=True,
        )
        self.before_training()
        while self.step < self.total_steps:
            self.stop_if_requested(stops)
            metrics = self.train_step()
            self.step += 1
            bar.update(1)
            check_parameters(self.accelerator.unwrap_model(self.model), self.step, self.run_dir)
            if metrics is None:
                continue
            self.after_step(metrics)
            bar.set_postfix({k: f"{metrics[k]:.3f}" for k in self.progress_keys if k in metrics})
            if self.step % max(self.args.logging_steps, 1) == 0 or self.step == self.total_steps:
                self.log.log(metrics, self.step)
            history.append(metrics)
            if self.args.save_steps and self.step % self.args.save_steps == 0:
                self.save()
        bar.close()
        return history
