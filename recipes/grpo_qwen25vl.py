"""GRPO post-training of Qwen2.5-VL for temporal video grounding with Invert4TVG's inversion tasks.

    accelerate launch recipes/grpo_qwen25vl.py --config recipes/configs/invert4tvg_qwen25vl_3b.yaml
    python recipes/grpo_qwen25vl.py --config recipes/configs/tiny_cpu.yaml --max_steps 20   # any field overrides

Each step trains grounding (IoU + format rewards) with probability ``tvg_probability`` and otherwise one inversion
task (verb completion, action recognition or video description on the ground-truth clip); ``tvg_probability: 1``
is the Time-R1 baseline.
"""

from __future__ import annotations

from functools import partial

from invert4tvg.builders import (
    build_engine,
    build_rewards,
    build_sampler,
    frame_cache,
    load_split,
    load_templates,
)
from invert4tvg.config import DataArguments, GRPOArguments, ModelArguments, TaskArguments
from invert4tvg.eval.metrics import summary_line
from invert4tvg.eval.runner import evaluate, validation
from invert4tvg.grpo.trainer import GRPOTrainer
from invert4tvg.policy.loading import load_policy
from invert4tvg.rollout.options import engine_options
from invert4tvg.training.announce import end_lines, grpo_start_lines
from invert4tvg.training.fsdp import gathered, reads_weights
from invert4tvg.training.run import TrainingRun, run_script


def main(argv: list[str] | None = None) -> dict:
    # Arguments, input files, launch and output_dir are checked before anything loads (training/run.py)
    run = TrainingRun.setup((ModelArguments, DataArguments, TaskArguments, GRPOArguments), argv)
    model_args, data_args, task_args, args = run.model_args, run.data_args, run.task_args, run.args
    accelerator = run.accelerator

    train_records = load_split(data_args, "train")
    val_records = load_split(data_args, "val")[: args.eval_max_samples] if data_args.val_annotations else None
    test_records = load_split(data_args, "test") if data_args.test_annotations else None
    # FSDP2: the main process reads the weights, the others build the model on the meta device
    policy = load_policy(model_args, meta=not reads_weights(args, accelerator))
    templates = load_templates(task_args, policy)
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
    metadata = run.begin(  # the run's first writes: only now that everything has loaded
        args.setting,
        p=task_args.tvg_probability,
        invert_tasks=task_args.invert_tasks,
        reward=args.invert_reward,
    )

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
            evaluate=validation(policy, engine, val_records, **eval_options) if val_records else None,
        )
        n = accelerator.num_processes
        run.say(grpo_start_lines(args, model_args, policy.name, score.names, n, trainer.total_steps))
        trainer.train()

        results = {}
        final = trainer.save_final()  # every process: sharded (FSDP2) weights are gathered, the main writes
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
    run.finish(end_lines(final, "GRPO", eval_dir, summary_line(results) if results else ""))
    return results


if __name__ == "__main__":
    run_script(main)
