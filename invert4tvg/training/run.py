"""The skeleton both training recipes share (torchtune's setup / train / cleanup), so a recipe keeps only its own parts.

A recipe reads::

    run = TrainingRun.setup((ModelArguments, DataArguments, TaskArguments, GRPOArguments), argv)
    ...  # load the data, the model, the rewards: a failure here leaves output_dir as it was
    metadata = run.begin(setting=..., **what_this_recipe_records)  # the run's first writes
    trainer = ...
    run.say(start_lines)
    trainer.train()
    run.finish(end_lines(trainer.save_final(), ...))

The order is the contract (docs/training.md): every check that needs no model (arguments, input files, launch,
output_dir against --resume_from_checkpoint / --overwrite_output_dir) runs in :meth:`TrainingRun.setup`, before
anything heavy loads; nothing is written or removed in ``output_dir`` until :meth:`TrainingRun.begin`, which the
recipe calls once everything has loaded.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import set_seed

from invert4tvg.config import DataArguments, ModelArguments, TaskArguments, parse_config, to_dict
from invert4tvg.config_checks import check_inputs
from invert4tvg.policy.loading import mixed_precision
from invert4tvg.training import trackers
from invert4tvg.training.announce import say
from invert4tvg.training.launch import check_launch
from invert4tvg.training.output_dir import prepare_output_dir, replace_previous_run
from invert4tvg.training.run_log import write_metadata
from invert4tvg.training.stops import run_main
from rewards import nlp


@dataclass
class TrainingRun:
    """A recipe's parsed arguments, its ``Accelerator`` and its place in ``output_dir``."""

    model_args: ModelArguments
    data_args: DataArguments
    task_args: TaskArguments
    args: Any  # the recipe's own arguments: GRPOArguments or SFTArguments
    accelerator: Accelerator
    config: dict[str, Any]  # every field, as metadata.json records it and a resume compares it
    resume_from: Path | None  # the checkpoint to continue from; None for a fresh run

    @classmethod
    def setup(cls, argument_classes: tuple[type, ...], argv: list[str] | None) -> TrainingRun:
        """Parse the arguments and check everything that needs no model; create the ``Accelerator``, seed, and
        decide what the run does with ``output_dir`` (raises a one-line user error, writes nothing)."""
        model_args, data_args, task_args, args = parse_config(argument_classes, argv)
        check_inputs(
            argv, model_args, data_args, task_args
        )  # a missing file: one line naming what creates it
        check_launch(model_args, data_args, args)  # DeepSpeed refused; the memory plan must fit the GPU
        # bf16 compute under autocast with fp32 trainable weights (docs/training.md, "Precision")
        accelerator = Accelerator(
            mixed_precision=mixed_precision(model_args),
            log_with=trackers.log_with(args),
            project_dir=args.output_dir,
        )
        set_seed(args.seed)
        nlp.set_aspectual_verbs(task_args.aspectual_verbs)  # one list for the VC mask and the verb rewards
        config = to_dict(model_args, data_args, task_args, args)
        resume_from = prepare_output_dir(args, config, accelerator.is_main_process)
        if resume_from is not None:
            args.resume_from_checkpoint = str(resume_from)
        accelerator.wait_for_everyone()
        return cls(model_args, data_args, task_args, args, accelerator, config, resume_from)

    def begin(self, setting: str | None, **fields: Any) -> dict[str, Any]:
        """Everything has loaded: replace a previous run (``--overwrite_output_dir``), write ``metadata.json`` with
        ``fields`` and start the trackers. Returns the metadata written."""
        args = self.args
        metadata = {
            "run_name": trackers.run_name(args),
            "setting": setting,
            "seed": args.seed,
            **fields,
            "model": self.model_args.model_name_or_path,
            "dataset": self.data_args.train_annotations,
            "config": self.config,
        }
        if self.resume_from is not None:
            metadata["resumed_from"] = str(self.resume_from)
        if self.accelerator.is_main_process:
            replace_previous_run(args)
            write_metadata(args.output_dir, **metadata)
        trackers.start_trackers(self.accelerator, args, self.config)  # TensorBoard / W&B
        return metadata

    def say(self, lines: Sequence[str]) -> None:
        """Print on the main process only."""
        say(self.accelerator, lines)

    def finish(self, lines: Sequence[str]) -> None:
        """Print the closing lines and close the trackers."""
        self.say(lines)
        # accelerate's end_training destroys the process group; a process that leaves while another still writes
        # final/ can abort in gloo's teardown ("terminate called without an active exception", SIGABRT), so the
        # processes first meet here.
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


def run_script(main: Callable[[list[str]], Any]) -> None:
    """``python recipes/NAME.py ...``: timed log lines, then the recipe's ``main`` on the command line's arguments
    (a user error is one line and exit code 2, see :func:`invert4tvg.training.stops.run_main`)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    run_main(main, sys.argv[1:])
