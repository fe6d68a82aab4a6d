"""Supervised warm start before GRPO: grounding answers, optionally mixed with Invert-SFT (clip -> query).

    accelerate launch recipes/sft_warmstart.py --config recipes/configs/sft_tiny_cpu.yaml

The checkpoint in ``OUTPUT_DIR/final`` is what a GRPO config's ``model_name_or_path`` starts from.
"""

from __future__ import annotations

import logging
import sys

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
from invert4tvg.policy.loading import load_policy
from invert4tvg.runs import write_metadata
from invert4tvg.sft.trainer import SFTTrainer
from invert4tvg.tasks import build_task_instance


def main(argv: list[str] | None = None) -> None:
    model_args, data_args, task_args, args = parse_config(
        (ModelArguments, DataArguments, TaskArguments, SFTArguments), argv
    )
    accelerator = Accelerator(log_with=args.report_to or None, project_dir=args.output_dir)
    set_seed(args.seed)

    policy = load_policy(model_args)
    policy.think_template = args.think_template
    records = load_split(data_args, "train")
    templates, sampling = load_templates(task_args), data_args.sampling()
    rng = np.random.default_rng(args.seed)

    def build_instance(record, task):
        return build_task_instance(record, task, sampling, templates, task_args.verb_mask, rng)

    if accelerator.is_main_process:
        write_metadata(
            args.output_dir,
            run_name=args.run_name or args.output_dir,
            setting=args.setting or "sft",
            seed=args.seed,
            model=model_args.model_name_or_path,
            dataset=data_args.train_annotations,
            config=to_dict(model_args, data_args, task_args, args),
        )
    trainer = SFTTrainer(
        policy,
        records,
        build_instance,
        args,
        accelerator,
        frame_cache=frame_cache(data_args),
        max_bad_video_fraction=data_args.max_bad_video_fraction,
    )
    trainer.train()
    if accelerator.is_main_process:
        accelerator.unwrap_model(trainer.model).save_pretrained(f"{args.output_dir}/final")
        policy.processor.save_pretrained(f"{args.output_dir}/final")
    accelerator.end_training()


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    main(sys.argv[1:])
