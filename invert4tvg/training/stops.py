"""Stopping a run on SIGINT / SIGTERM with a checkpoint, instead of a traceback or a silent exit 143.

Preemptible clusters (SLURM, Kubernetes, spot instances) send SIGTERM and wait a grace period before SIGKILL;
Ctrl-C sends SIGINT. While :class:`StopSignals` is active the first of either only sets a flag: the loop finishes
the step it is in (or abandons it, when the step fails after the signal and before any weight changed), saves a
checkpoint and raises :class:`RunInterrupted`, which unwinds through the recipe (stopping Ray workers) and exits with
``128 + signal`` (130 for SIGINT, 143 for SIGTERM, the shell's convention) after one line saying how to resume. A
second signal aborts at once with the default behaviour, without a checkpoint.

With several processes (accelerate launch) the flag is agreed on every step, so all ranks stop after the same step
even when only one of them received the signal.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import torch

from invert4tvg.errors import EXIT_USER_ERROR, UserError
from rewards.errors import RewardOutputError

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(SystemExit):
    """The run stopped on a signal after saving ``checkpoint``; exits the process with ``128 + signum``."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        super().__init__(128 + signum)
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        if checkpoint is None:
            self.message = (
                f"{name}: stopped before the first step finished; nothing to resume: run the same command with "
                "--overwrite_output_dir true to start again"
            )
        else:
            program = sys.argv[0]
            head = ["python", program] if program.endswith(".py") else [Path(program).name or "python"]
            command = shlex.join([*head, *_without_resume(sys.argv[1:])])
            self.message = (
                f"{name}: stopped after step {step} with checkpoint {checkpoint}; to resume, run the same command "
                f"with --resume_from_checkpoint latest: {command} --resume_from_checkpoint latest"
            )

    def __str__(self) -> str:
        return self.message


def _without_resume(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--resume_from_checkpoint", "--overwrite_output_dir"):
            skip = True
            continue
        if arg.startswith(("--resume_from_checkpoint=", "--overwrite_output_dir=")):
            continue
        out.append(arg)
    return out


class StopSignals:
    """Install the handlers for the life of a ``with`` block (main thread only; elsewhere signals stay as they are)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # a second signal: give up at once, as the default handler would
            self._restore()
            logger.error("%s again: aborting without a checkpoint", signal.Signals(signum).name)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        logger.warning(
            "%s received: finishing the current step, then saving a checkpoint and stopping "
            "(send it again to abort without a checkpoint)",
            signal.Signals(signum).name,
        )

    def requested(self, accelerator=None) -> int | None:
        """The signal to stop on, agreed across processes (any rank's signal stops all of them)."""
        if accelerator is None or accelerator.num_processes == 1:
            return self.signum
        flag = torch.tensor([self.signum or 0], device=accelerator.device)
        agreed = int(accelerator.gather(flag).max().item())
        return agreed or None


def run_main(main, argv: list[str]):
    """Run a recipe's ``main``; on :class:`RunInterrupted` print its one line last and exit with its code; an
    expected user error (a bad value, a missing or malformed input, an ``output_dir`` holding another run, a
    checkpoint that cannot be resumed, a reward returning a non-number) is one line and exit code 2, not a traceback.
    A configuration or data error is met by every process alike, so only the first prints it; a reward's output
    is each process's own."""
    try:
        return main(argv)
    except (UserError, RewardOutputError) as err:
        if int(os.environ.get("RANK", "0")) == 0 or isinstance(err, RewardOutputError):
            print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
    except RunInterrupted as stop:
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):  # a bar closed later would print after our line
            bar.close()
        print(stop.message, file=sys.stderr, flush=True)
        raise
