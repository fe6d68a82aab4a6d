"""``invert4tvg eval``: grounding (R1@m, mIoU) and action understanding (VC/AR/VD) of a checkpoint on a split."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint: R1@0.3/0.5/0.7, mIoU, VC/AR/VD accuracy -> predictions.jsonl + metrics.json",
        description="Generate answers with the TVG prompt on whole videos (greedy by default) and with the VC/AR/VD "
        "prompts on ground-truth clips, score them, and write OUT/predictions.jsonl and OUT/metrics.json. Data, prompt and video "
        "settings come from the training run of --model (RUN/metadata.json next to RUN/final) unless --config "
        "is given, then from the flags below.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="checkpoint directory or hub id (e.g. RUN/final); it is decoded with the head it was saved with "
        "(docs/heads.md)",
    )
    parser.add_argument(
        "--config",
        help="a training YAML whose data, video and prompt settings are used (default: the configuration the "
        "model was trained with, read from its run's metadata.json; a warning names every setting the model "
        "sees that differs from training)",
    )
    parser.add_argument(
        "--data", help="a benchmark directory with {split}.json and videos/ (e.g. invert4tvg synth output)"
    )
    parser.add_argument(
        "--format",
        dest="dataset_format",
        help="charades-sta | tvg-json | activitynet | qvhighlights | time-r1",
    )
    parser.add_argument("--annotations", help="annotation file of the split (instead of --data)")
    parser.add_argument("--durations", help="durations file (charades-sta)")
    parser.add_argument("--video-dir", help="where the videos are")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument(
        "--out",
        help="output directory (default: next to the model: RUN/eval-SPLIT for --model RUN/final, DIR-eval-SPLIT "
        "for another directory, runs/eval/NAME-SPLIT for a hub id)",
    )
    parser.add_argument(
        "--setting",
        help="name this evaluation's setting in reports (e.g. time_r1, invert4tvg); default: the training run's "
        "setting, which `invert4tvg report` groups seeds by",
    )
    parser.add_argument("--tasks", default="vc,ar,vd", help="action-understanding tasks to run ('' for none)")
    parser.add_argument("--strict", action="store_true", help="R1@m counts IoU > m (Time-R1) instead of >= m")
    parser.add_argument(
        "--parser",
        choices=("answer", "time-r1"),
        default="answer",
        help="how the predicted span is read: answer (default: the model's head decodes it, as the iou reward reads "
        "it in training; for text timestamps the last 'A to B' in the last <answer> block) or time-r1 (text "
        "timestamps only: Time-R1's public evaluation, the last 'A to B' anywhere in the output). Numbers from the "
        "two are not comparable; metrics.json records the parser",
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument(
        "--backend",
        help="rollout engine: hf | ray-hf | vllm | ray-vllm (default: the config's rollout_backend, else hf)",
    )
    parser.add_argument(
        "--workers", type=int, help="rollout workers for ray-* backends (default: the config's, else 1)"
    )
    parser.add_argument("--max-samples", type=int, help="evaluate only the first N records")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        help="longest answer (default: the training run's max_completion_length, else 1024)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from invert4tvg.builders import build_engine, frame_cache, load_split, load_templates
    from invert4tvg.config import DataArguments, ModelArguments, TaskArguments, parse_config
    from invert4tvg.errors import UserError, did_you_mean
    from invert4tvg.eval import settings
    from invert4tvg.eval.metrics import summary_line
    from invert4tvg.eval.runner import evaluate
    from invert4tvg.policy.loading import load_policy
    from invert4tvg.tasks import INVERSION_TASKS
    from rewards import nlp

    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in INVERSION_TASKS]
    if unknown:
        raise UserError(
            f"--tasks: unknown task {unknown[0]!r}{did_you_mean(unknown[0], INVERSION_TASKS)} (choose from "
            f"{', '.join(INVERSION_TASKS)}, comma-separated; '' for grounding only)"
        )
    argv = ["--config", args.config] if args.config else []
    model_args, data_args, task_args = parse_config(
        (ModelArguments, DataArguments, TaskArguments), argv, ignore_unknown=True
    )
    trained = settings.training_config(args.model)
    config_source = args.config
    if trained is None and not args.config:
        logger.warning(
            "%s has no run metadata.json beside it: default prompts and video settings are used; pass the "
            "training --config so the model is evaluated as it was trained",
            args.model,
        )
    elif trained is not None and not args.config:
        settings.apply(trained[0], data_args, task_args)
        config_source = str(trained[1])
        logger.info("data, prompt and video settings: the training configuration in %s", trained[1])
    elif trained is not None:
        for difference in settings.differences(trained[0], data_args, task_args):
            logger.warning("--config differs from the training run (%s): %s", trained[1], difference)
    model_args.model_name_or_path = args.model
    if args.data:
        data_args.dataset_format = "tvg-json"
        data_args.video_dir = str(Path(args.data) / "videos")
        setattr(data_args, f"{args.split}_annotations", str(Path(args.data) / f"{args.split}.json"))
    for field in ("dataset_format", "durations", "video_dir"):
        if getattr(args, field):
            setattr(data_args, field, getattr(args, field))
    if args.annotations:
        setattr(data_args, f"{args.split}_annotations", args.annotations)
    out = Path(args.out) if args.out else default_out(args.model, args.split)
    records = load_split(data_args, args.split)[: args.max_samples]  # val/test: ground truth as published
    nlp.set_aspectual_verbs(task_args.aspectual_verbs)  # as in training: the VC mask and the verb rewards
    policy = load_policy(model_args, for_training=False)
    if args.config:
        config = yaml.safe_load(Path(args.config).read_text()) or {}
    else:
        config = trained[0] if trained is not None else {}
    backend = args.backend or config.get("rollout_backend") or "hf"
    workers = args.workers or config.get("rollout_workers") or 1
    engine = build_engine(backend, policy, workers=workers, model_args=model_args)
    try:
        metrics = evaluate(
            policy,
            engine,
            records,
            out,
            video_sampling=data_args.sampling(),
            templates=load_templates(task_args, policy),
            action_tasks=tasks,
            temperature=args.temperature,
            max_tokens=args.max_new_tokens or config.get("max_completion_length") or 1024,
            strict=args.strict,
            parser=args.parser,
            frame_cache=frame_cache(data_args),
            metadata={
                **settings.run_identity(args.model),  # setting, seed, p, invert_tasks, reward, run_name
                **({"setting": args.setting} if args.setting else {}),
                "model": args.model,
                "config": config_source,
                "rollout_backend": backend,
                "dataset": getattr(data_args, f"{args.split}_annotations"),
                "split": args.split,
            },
        )
    finally:
        engine.close()
    print(summary_line(metrics))
    print(f"predictions.jsonl and metrics.json are in {out}")
    return 0


def default_out(model: str, split: str) -> Path:
    """Next to a local model directory: ``RUN/final`` -> ``RUN/eval-test`` (with the run it belongs to, never over
    the run's own ``eval/``), any other ``DIR`` -> ``DIR-eval-test``; a hub id -> ``runs/eval/NAME-test``."""
    path = Path(model)
    if path.is_dir():
        path = path.absolute()
        return (
            path.parent / f"eval-{split}"
            if path.name == "final"
            else path.parent / f"{path.name}-eval-{split}"
        )
    return Path("runs") / "eval" / f"{model.replace('/', '--')}-{split}"
