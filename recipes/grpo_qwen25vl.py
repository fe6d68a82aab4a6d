"""GRPO post-training of Qwen2.5-VL for temporal video grounding with Invert4TVG's inversion tasks.

    accelerate launch recipes/grpo_qwen25vl.py --config recipes/configs/invert4tvg_qwen25vl_3b.yaml
    python recipes/grpo_qwen25vl.py --config recipes/configs/tiny_cpu.yaml --max_steps 20   # any field overrides

Each step trains grounding (IoU + format rewards) with probability ``tvg_probability`` and otherwise one inversion
task (verb completion, action recognition or video description on the ground-truth clip); ``tvg_probability: 1``
is the Time-R1 baseline.
"""

from __future__ import annotations

import logging
import sys
from functools import partial

from accelerate import Accelerator
from accelerate.utils import set_seed

from invert4tvg.builders import (
    build_engine,
    build_rewards,
    build_sampler,
    frame_cache,
    load_split,
    load_templates,
)
from invert4tvg.config import (
    DataArguments,
    GRPOArguments,
    ModelArguments,
    TaskArguments,
    parse_config,
    to_dict,
)
from invert4tvg.config_checks import check_inputs
from invert4tvg.eval.metrics import summary_line
from invert4tvg.eval.runner import evaluate
from invert4tvg.grpo.trainer import GRPOTrainer
from invert4tvg.policy.loading import load_policy, mixed_precision
from invert4tvg.rollout.options import engine_options
from invert4tvg.training import trackers
from invert4tvg.training.announce import end_lines, grpo_start_lines, say
from invert4tvg.training.fsdp import gathered, reads_weights
from invert4tvg.training.launch import check_launch
from invert4tvg.training.output_dir import prepare_output_dir, replace_previous_run
from invert4tvg.training.run_log import write_metadata
from invert4tvg.training.stops import run_main
from rewards import nlp


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, task_args, args = parse_config(
        (ModelArguments, DataArguments, TaskArguments, GRPOArguments), argv
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

    train_records = load_split(data_args, "train")
    val_records = load_split(data_args, "val")[: args.eval_max_samples] if data_args.val_annotations else None
    test_records = load_split(data_args, "test") if data_args.test_annotations else None
    policy = load_policy(
        model_args, meta=not reads_weights(args, accelerator)
    )  # FSDP2: the main process reads
    templates = load_templates(task_args, policy)
    nlp.set_aspectual_verbs(task_args.aspectual_verbs)  # one list for the VC mask and the verb rewards
    sampler = build_sampler(task_args, seed=args.seed)
    score = build_rewards(args)  # before the rollout workers and the first write: fails leaving nothing
    build_instances = partial(
        sampler.make_instances, sampling=data_args.sampling(), templates=templates, mask=task_args.verb_mask
    )
    engine = build_engine(
        args.rollout_backend,
        policy,
        args.rollout_batch_sequences,
        workers=args.rollout_workers,
        ray_address=args.ray_address,
        model_args=model_args,
        seed=args.seed,
        **engine_options(args),  # vllm_* fields: memory, sleep mode, tensor parallelism (rollout/options.py)
    )
    cache = frame_cache(data_args)
    eval_options = dict(
        video_sampling=data_args.sampling(),
        templates=templates,
        frame_cache=cache,
        max_tokens=args.max_completion_length,
        progress=False,
    )

    metadata = {
        "run_name": trackers.run_name(args),
        "setting": args.setting,
        "seed": args.seed,
        "p": task_args.tvg_probability,
        "invert_tasks": task_args.invert_tasks,
        "reward": args.invert_reward,
        "model": model_args.model_name_or_path,
        "dataset": data_args.train_annotations,
        "config": config,
    }
    if resume_from is not None:
        metadata["resumed_from"] = str(resume_from)
    if accelerator.is_main_process:
        replace_previous_run(args)  # --overwrite_output_dir: only now that everything has loaded
        write_metadata(args.output_dir, **metadata)
    trackers.start_trackers(accelerator, args, config)

    def validate(step: int) -> dict[str, float]:
        metrics = evaluate(policy, engine, val_records, None, **eval_options)
        return {
            k: metrics[k]
            for k in ("R1@0.3", "R1@0.5", "R1@0.7", "mIoU", "VC", "AR", "VD")
            if metrics[k] is not None
        }

    with engine:  # stops rollout workers (Ray) however the run ends
        trainer = GRPOTrainer(
            policy=policy,
            engine=engine,
            score=score,
            sampler=sampler,
            build_instances=build_instances,
            records=train_records,
            args=args,
            accelerator=accelerator,
            frame_cache=cache,
            max_bad_video_fraction=data_args.max_bad_video_fraction,
            evaluate=validate if val_records else None,
        )
        n = accelerator.num_processes
        say(accelerator, grpo_start_lines(args, model_args, policy.name, score.names, n, trainer.total_steps))
        trainer.train()

        results = {}
        final = (
            trainer.save_final()
        )  # every process: sharded (FSDP2) weights are gathered, the main process writes
        if test_records:
            # Sharded weights are gathered once on every process; the main process evaluates with them.
            with gathered(trainer.model):
                if accelerator.is_main_process:
                    results = evaluate(
                        policy,
                        engine,
                        test_records,
                        f"{args.output_dir}/eval",
                        metadata={**metadata, "split": "test"},
                        **{**eval_options, "progress": True},
                    )
        eval_dir = f"{args.output_dir}/eval" if test_records else None
        say(accelerator, end_lines(final, "GRPO", eval_dir, summary_line(results) if results else ""))
    accelerator.end_training()
    return results


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    run_main(main, sys.argv[1:])
