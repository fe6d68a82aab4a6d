"""Supervised warm start before GRPO: grounding answers, optionally mixed with Invert-SFT (clip -> query).

    accelerate launch recipes/sft_warmstart.py --config recipes/configs/sft_tiny_cpu.yaml

The checkpoint in ``OUTPUT_DIR/final`` is what a GRPO config's ``model_name_or_path`` starts from.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from invert4tvg.builders import build_engine, frame_cache, load_split, load_templates
from invert4tvg.config import DataArguments, ModelArguments, SFTArguments, TaskArguments
from invert4tvg.eval.runner import validation
from invert4tvg.policy.loading import load_policy
from invert4tvg.sft.trainer import SFTTrainer
from invert4tvg.sft.vision_pretrain import pretrain_vision_tower
from invert4tvg.tasks import build_task_instance
from invert4tvg.training.announce import end_lines, sft_start_lines
from invert4tvg.training.fsdp import reads_weights
from invert4tvg.training.run import TrainingRun, run_script


def main(argv: list[str] | None = None) -> None:
    # Arguments, input files, launch and output_dir are checked before anything loads (training/run.py)
    run = TrainingRun.setup((ModelArguments, DataArguments, TaskArguments, SFTArguments), argv)
    model_args, data_args, task_args, args = run.model_args, run.data_args, run.task_args, run.args

    records = load_split(data_args, "train")
    val_records = load_split(data_args, "val")[: args.eval_max_samples] if data_args.val_annotations else []
    grounding = []
    if args.grounding_annotations:
        grounding = load_split(replace(data_args, train_annotations=args.grounding_annotations), "train")
    # FSDP2: the main process reads the weights, the others build the model on the meta device
    meta = not reads_weights(args, run.accelerator)
    policy = load_policy(model_args, extra_options={"think_template": args.think_template}, meta=meta)
    templates, sampling = load_templates(task_args, policy), data_args.sampling()
    rng = np.random.default_rng(args.seed)
    cache = frame_cache(data_args)
    vision = {}
    # Stage 1: a random vision tower learns to see first (docs/training.md). Under FSDP2 only the main process holds
    # weights: it trains the tower alone, and sharding hands its weights to the others.
    if args.vision_pretrain_epochs and not meta:
        vision = pretrain_vision_tower(
            policy.model,
            policy.processor,
            records,
            sampling,
            epochs=args.vision_pretrain_epochs,
            learning_rate=args.vision_pretrain_learning_rate,
            batch_size=args.vision_pretrain_batch_size,
            seed=args.seed,
            cache=cache,
            val_records=val_records,
        )

    def build_instance(record, task):
        return build_task_instance(record, task, sampling, templates, task_args.verb_mask, rng)

    # the run's first writes: only now that everything has loaded
    run.begin(args.setting or "sft", **({"vision_pretraining": vision} if vision else {}))
    trainer = SFTTrainer(
        policy,
        records,
        build_instance,
        args,
        run.accelerator,
        frame_cache=cache,
        max_bad_video_fraction=data_args.max_bad_video_fraction,
        grounding_records=grounding,
        evaluate=validation(
            policy,
            build_engine("hf", policy),
            val_records,
            video_sampling=sampling,
            templates=templates,
            frame_cache=cache,
            max_tokens=args.max_completion_length,
        )
        if val_records and args.eval_steps
        else None,
    )
    run.say(
        sft_start_lines(args, model_args, policy.name, run.accelerator.num_processes, trainer.total_steps)
    )
    trainer.train()
    final = trainer.save_final()  # every process: sharded (FSDP2) weights are gathered, the main writes
    run.finish(end_lines(final, "SFT"))


if __name__ == "__main__":
    run_script(main)
