"""Supervised warm start before GRPO: grounding answers, optionally mixed with Invert-SFT (clip -> query).

    accelerate launch recipes/sft_warmstart.py --config recipes/configs/sft_tiny_cpu.yaml

The checkpoint in ``OUTPUT_DIR/final`` is what a GRPO config's ``model_name_or_path`` starts from.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace

import numpy as np
from accelerate import Accelerator
from accelerate.utils import set_seed

from invert4tvg.builders import frame_cache, load_split, load_templates
from invert4tvg.config import (
    DataArguments,
    ModelArguments,
    SFTArguments,
    TaskArguments,
    parse_config,
    to_dict,
)
from invert4tvg.config_checks import check_inputs
from invert4tvg.policy.loading import load_policy, mixed_precision
from invert4tvg.sft.trainer import SFTTrainer
from invert4tvg.tasks import build_task_instance
from invert4tvg.training import trackers
from invert4tvg.training.announce import end_lines, say, sft_start_lines
from invert4tvg.training.fsdp import reads_weights
from invert4tvg.training.launch import check_launch
from invert4tvg.training.output_dir import prepare_output_dir, replace_previous_run
from invert4tvg.training.run_log import write_metadata
from invert4tvg.training.stops import run_main
from rewards import nlp


def main(argv: list[str] | None = None) -> None:
    model_args, data_args, task_args, args = parse_config(
        (ModelArguments, DataArguments, TaskArguments, SFTArguments), argv
    )
    check_inputs(argv, model_args, data_args, task_args)  # a missing file: one line naming what creates it
    check_launch(
        model_args, data_args, args
    )  # DeepSpeed refused; the memory plan must fit the GPU (no model yet)
    # bf16 compute under autocast with fp32 trainable weights (docs/training.md, "Precision")
    accelerator = Accelerator(
        mixed_precision=mixed_precision(model_args),
        log_with=trackers.log_with(args),
        project_dir=args.output_dir,
    )
    set_seed(args.seed)
    config = to_dict(model_args, data_args, task_args, args)
    # output_dir / --resume_from_checkpoint / --overwrite_output_dir are checked before anything is loaded; nothing is
    # written (or removed) there until the data, the model and the rewards have loaded (docs/training.md)
    resume_from = prepare_output_dir(args, config, accelerator.is_main_process)
    if resume_from is not None:
        args.resume_from_checkpoint = str(resume_from)
    accelerator.wait_for_everyone()

    records = load_split(data_args, "train")
    grounding = []
    if args.grounding_annotations:
        grounding = load_split(replace(data_args, train_annotations=args.grounding_annotations), "train")
    policy = load_policy(
        model_args,
        extra_options={"think_template": args.think_template},
        meta=not reads_weights(
            args, accelerator
        ),  # FSDP2: the main process reads the weights, the others none
    )
    templates, sampling = load_templates(task_args, policy), data_args.sampling()
    nlp.set_aspectual_verbs(task_args.aspectual_verbs)  # one list for the VC mask and the verb rewards
    rng = np.random.default_rng(args.seed)

    def build_instance(record, task):
        return build_task_instance(record, task, sampling, templates, task_args.verb_mask, rng)

    if accelerator.is_main_process:
        replace_previous_run(args)  # --overwrite_output_dir: only now that everything has loaded
        write_metadata(
            args.output_dir,
            run_name=trackers.run_name(args),
            setting=args.setting or "sft",
            seed=args.seed,
            model=model_args.model_name_or_path,
            dataset=data_args.train_annotations,
            config=config,
            **({"resumed_from": str(resume_from)} if resume_from is not None else {}),
        )
    trackers.start_trackers(accelerator, args, config)  # TensorBoard / W&B, as GRPO
    trainer = SFTTrainer(
        policy,
        records,
        build_instance,
        args,
        accelerator,
        frame_cache=frame_cache(data_args),
        max_bad_video_fraction=data_args.max_bad_video_fraction,
        grounding_records=grounding,
    )
    n = accelerator.num_processes
    say(accelerator, sft_start_lines(args, model_args, policy.name, n, trainer.total_steps))
    trainer.train()
    final = (
        trainer.save_final()
    )  # every process: sharded (FSDP2) weights are gathered, the main process writes
    say(accelerator, end_lines(final, "SFT"))
    accelerator.end_training()


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    run_main(main, sys.argv[1:])
